/* The shared list of bad values (tests/bad_values.txt), which the Python
 * and Node tests read too: each record is refused through insert, upsert,
 * update and a transaction, and the table is left as it was.
 *
 * The placeholders "<nan>", "<inf>" and "<-inf>" become what printf("%g")
 * writes for those doubles: the text a C program that formats its numbers
 * itself really produces. C's invalid-input error is TIDELOG_INVALID_INPUT,
 * or TIDELOG_INVALID_JSON when the text is not JSON at all (nan, or a
 * number beyond a double).
 *
 * Usage: test_bad_values <scratch dir> <tests/bad_values.txt> */
#include "testutil.h" /* first: it sets _POSIX_C_SOURCE */

#include <math.h>

/* `line` with every placeholder replaced by printf's text for it. */
static void substitute(const char *line, char *out, size_t n) {
    static const struct {
        const char *placeholder;
        double value;
    } subs[] = {{"\"<nan>\"", NAN}, {"\"<inf>\"", INFINITY}, {"\"<-inf>\"", -INFINITY}};
    size_t w = 0;
    while (*line) {
        int done = 0;
        for (size_t i = 0; i < sizeof subs / sizeof subs[0] && !done; i++) {
            size_t len = strlen(subs[i].placeholder);
            if (strncmp(line, subs[i].placeholder, len) == 0) {
                int k = snprintf(out + w, n - w, "%g", subs[i].value);
                CHECK(k > 0 && (size_t)k < n - w);
                w += (size_t)k;
                line += len;
                done = 1;
            }
        }
        if (!done) {
            CHECK(w + 1 < n);
            out[w++] = *line++;
        }
    }
    out[w] = '\0';
}

static void expect_refused(tidelog_status st, const char *what, const char *record) {
    if (st != TIDELOG_INVALID_INPUT && st != TIDELOG_INVALID_JSON)
        FAIL("%s %s returned %s, expected TIDELOG_INVALID_INPUT or TIDELOG_INVALID_JSON "
             "(last error: %s)",
             what, record, tidelog_status_name((int32_t)st), tu_err());
    if (tidelog_last_error() == NULL || tidelog_last_error()[0] == '\0')
        FAIL("%s %s failed without a last-error message", what, record);
}

/* The table still holds exactly {"id": 1, "v": 0} and the log did not grow. */
static void expect_unchanged(tidelog_db *db, const char *before, uint64_t last,
                             const char *what, const char *record) {
    uint64_t count = 0;
    tidelog_string *s = NULL;
    OK(tidelog_count(db, "t", &count));
    if (count != 1)
        FAIL("%s %s: table holds %llu records", what, record, (unsigned long long)count);
    OK(tidelog_get(db, "t", "1", &s));
    CHECK(s != NULL);
    if (strcmp(tidelog_string_data(s), before) != 0)
        FAIL("%s %s: record changed to %s", what, record, tidelog_string_data(s));
    tidelog_string_free(s);
    uint64_t first = 0, now_last = 0;
    OK(tidelog_log_bounds(db, &first, &now_last));
    if (now_last != last)
        FAIL("%s %s: the log grew to %llu", what, record, (unsigned long long)now_last);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <scratch dir> <bad_values.txt>\n", argv[0]);
        return 2;
    }
    char dir[1024];
    tu_path(dir, sizeof dir, argv[1], "bad_values");
    FILE *f = fopen(argv[2], "r");
    if (f == NULL)
        FAIL("cannot open %s", argv[2]);

    tidelog_db *db = NULL;
    tidelog_string *s = NULL;
    uint64_t last = 0;
    OK(tidelog_open(dir, "{\"node_name\": \"n1\"}", &db));
    OK(tidelog_create_table(db, "t", NULL));
    OK(tidelog_upsert(db, "t", "{\"id\": 1, \"v\": 0}", &last));
    OK(tidelog_get(db, "t", "1", &s));
    char before[512];
    snprintf(before, sizeof before, "%s", tidelog_string_data(s));
    tidelog_string_free(s);

    char line[4096], record[8192];
    int cases = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        substitute(line, record, sizeof record);
        cases++;

        expect_refused(tidelog_insert(db, "t", record, NULL), "insert", record);
        expect_unchanged(db, before, last, "insert", record);
        expect_refused(tidelog_upsert(db, "t", record, NULL), "upsert", record);
        expect_unchanged(db, before, last, "upsert", record);
        expect_refused(tidelog_update(db, "t", record, NULL), "update", record);
        expect_unchanged(db, before, last, "update", record);

        /* In a transaction: refused when staged; the transaction goes on. */
        tidelog_txn *t = NULL;
        uint64_t seq = 99;
        OK(tidelog_txn_begin(db, &t));
        expect_refused(tidelog_txn_upsert(t, "t", record), "transaction upsert", record);
        expect_refused(tidelog_txn_insert(t, "t", record), "transaction insert", record);
        expect_refused(tidelog_txn_update(t, "t", record), "transaction update", record);
        OK(tidelog_txn_commit(t, &seq));
        tidelog_txn_free(t);
        CHECK(seq == 0); /* nothing was staged: nothing committed */
        expect_unchanged(db, before, last, "transaction", record);
    }
    fclose(f);
    if (cases < 10)
        FAIL("only %d cases in %s", cases, argv[2]);

    OK(tidelog_close(db));
    tidelog_db_free(db);
    printf("test_bad_values: %d bad records refused by every write\n", cases);
    return 0;
}
