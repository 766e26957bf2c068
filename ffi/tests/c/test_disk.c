/* A full disk through the C write path, and table disk budgets.
 *
 * Mounts a 24 MiB tmpfs (root, as in CI; fails, does not skip, where that
 * is not permitted), fills it beside the database, writes until a write
 * fails, and checks: the failure is TIDELOG_STORAGE with a message saying
 * the disk is full and what to do; every acknowledged write is readable;
 * writes resume once the filler is deleted, without a reopen; a reopen
 * keeps everything committed. Then a table budget: refused with
 * TIDELOG_STORAGE while another table writes, dropped oldest with the
 * exact count in tidelog_table_stats(), hostile budgets refused.
 *
 * Usage: test_disk <scratch dir>
 */
#include "testutil.h" /* first: it sets _POSIX_C_SOURCE */

#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_KEYS 20000

static char mnt[4096];

static void unmount(void) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "umount -l '%s'", mnt);
    if (system(cmd) != 0)
        fprintf(stderr, "test_disk: could not unmount %s\n", mnt);
}

/* Takes the free space with a file, then gives `leave` bytes back. */
static void fill(const char *path, long leave) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    static char chunk[64 << 10];
    memset(chunk, 7, sizeof chunk);
    long written = 0;
    while (fwrite(chunk, 1, sizeof chunk, f) == sizeof chunk && fflush(f) == 0)
        written += (long)sizeof chunk;
    fclose(f);
    CHECK(truncate(path, written > leave ? written - leave : 0) == 0);
}

static int present(tidelog_db *db, long key) {
    char k[32];
    snprintf(k, sizeof k, "%ld", key);
    tidelog_string *rec = NULL;
    OK(tidelog_get(db, "t", k, &rec));
    int found = rec != NULL;
    tidelog_string_free(rec);
    return found;
}

static void full_disk(const char *scratch) {
    tu_path(mnt, sizeof mnt, scratch, "disk_mnt");
    if (mkdir(mnt, 0700) != 0 && errno != EEXIST)
        FAIL("mkdir %s", mnt);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=24m tmpfs '%s'", mnt);
    if (system(cmd) != 0)
        FAIL("this test needs to mount a 24 MiB tmpfs at %s (run it as root, as CI does)", mnt);
    atexit(unmount);

    char dir[4200], filler[4200];
    tu_path(dir, sizeof dir, mnt, "db");
    tu_path(filler, sizeof filler, mnt, "filler");
    const char *opts = "{\"node_name\": \"full\", \"durability\": \"sync\", \"memory_budget\": \"8MiB\"}";
    tidelog_db *db = NULL;
    OK(tidelog_open(dir, opts, &db));
    OK(tidelog_create_table(db, "t", "{\"indexes\": [\"n\"]}"));
    fill(filler, 3L << 20);

    static long acked[MAX_KEYS], refused[MAX_KEYS], unknown[MAX_KEYS];
    size_t n_acked = 0, n_refused = 0, n_unknown = 0;
    static char rec[8192], pad[4001];
    memset(pad, 'x', 4000);
    pad[4000] = '\0';
    int saw_full = 0;
    long key = 0;
    while (n_refused + n_unknown < 5) {
        key++;
        if (key >= MAX_KEYS)
            FAIL("the disk never filled");
        snprintf(rec, sizeof rec, "{\"id\": %ld, \"n\": %ld, \"pad\": \"%s\"}", key, key, pad);
        tidelog_status st = tidelog_insert(db, "t", rec, NULL);
        if (st == TIDELOG_OK) {
            if (n_refused + n_unknown > 0)
                FAIL("write %ld succeeded while the disk was full", key);
            acked[n_acked++] = key;
            continue;
        }
        if (st != TIDELOG_STORAGE)
            FAIL("a full disk is TIDELOG_STORAGE, got %s: %s", tidelog_status_name((int32_t)st), tu_err());
        const char *msg = tu_err();
        if (strstr(msg, "may or may not be committed")) {
            unknown[n_unknown++] = key;
        } else {
            if (!strstr(msg, "no space left") || !strstr(msg, "resume"))
                FAIL("the message says the disk is full and what to do: %s", msg);
            saw_full = 1;
            refused[n_refused++] = key;
        }
    }
    CHECK(saw_full);
    CHECK(n_acked > 0);
    for (size_t i = 0; i < n_acked; i++)
        if (!present(db, acked[i]))
            FAIL("acknowledged write %ld not readable while the disk is full", acked[i]);

    /* Free space: writes resume without a reopen. */
    CHECK(unlink(filler) == 0);
    long resumed = ++key;
    snprintf(rec, sizeof rec, "{\"id\": %ld, \"n\": %ld}", resumed, resumed);
    double deadline = tu_now_s() + 60;
    while (tidelog_insert(db, "t", rec, NULL) != TIDELOG_OK) {
        if (tu_now_s() > deadline)
            FAIL("writes did not resume after space was freed: %s", tu_err());
        tu_sleep_ms(50);
    }
    acked[n_acked++] = resumed;
    OK(tidelog_close(db));
    tidelog_db_free(db);

    db = NULL;
    OK(tidelog_open(dir, opts, &db));
    for (size_t i = 0; i < n_acked; i++)
        if (!present(db, acked[i]))
            FAIL("acknowledged write %ld lost after reopen", acked[i]);
    for (size_t i = 0; i < n_refused; i++)
        if (present(db, refused[i]))
            FAIL("refused write %ld present after reopen", refused[i]);
    uint64_t count = 0, unknown_present = 0;
    for (size_t i = 0; i < n_unknown; i++)
        unknown_present += (uint64_t)present(db, unknown[i]);
    OK(tidelog_count(db, "t", &count));
    CHECK(count == n_acked + unknown_present);
    printf("   full disk: %zu acknowledged, %zu refused, %zu unknown\n", n_acked, n_refused, n_unknown);
    OK(tidelog_close(db));
    tidelog_db_free(db);
}

/* {"id":<4 digits>,"v":"xxxxxxxxxx"}: 28 bytes of JSON, 41 counted. */
#define REC 41

static void budgets(const char *scratch) {
    char dir[4200];
    tu_path(dir, sizeof dir, scratch, "budget_db");
    tidelog_db *db = NULL;
    OK(tidelog_open(dir, "{\"node_name\": \"b\"}", &db));
    char opts[128], rec[128];
    snprintf(opts, sizeof opts, "{\"disk_budget_bytes\": %d}", 2 * REC);
    OK(tidelog_create_table(db, "sensor_data", opts));
    OK(tidelog_create_table(db, "alerts", NULL));
    OK(tidelog_insert(db, "sensor_data", "{\"id\":1000,\"v\":\"xxxxxxxxxx\"}", NULL));
    OK(tidelog_insert(db, "sensor_data", "{\"id\":1001,\"v\":\"xxxxxxxxxx\"}", NULL));
    EXPECT(tidelog_insert(db, "sensor_data", "{\"id\":1002,\"v\":\"xxxxxxxxxx\"}", NULL), TIDELOG_STORAGE);
    CHECK(strstr(tu_err(), "disk_budget_bytes") != NULL);
    OK(tidelog_insert(db, "alerts", "{\"id\":1}", NULL));

    snprintf(opts, sizeof opts, "{\"disk_budget_bytes\": %d, \"on_full\": \"drop_oldest\"}", REC);
    OK(tidelog_set_table_budget(db, "sensor_data", opts));
    for (int i = 1002; i < 1005; i++) {
        snprintf(rec, sizeof rec, "{\"id\":%d,\"v\":\"xxxxxxxxxx\"}", i);
        OK(tidelog_insert(db, "sensor_data", rec, NULL));
    }
    tidelog_string *stats = NULL;
    OK(tidelog_table_stats(db, "sensor_data", &stats));
    CONTAINS(stats, "\"records\":1,");
    CONTAINS(stats, "\"dropped\":4,");
    tidelog_string_free(stats);

    EXPECT(tidelog_set_table_budget(db, "sensor_data", "{\"disk_budget_bytes\": 0}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_set_table_budget(db, "sensor_data", "{\"disk_budget_bytes\": -5}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_set_table_budget(db, "sensor_data", "{\"on_full\": \"explode\"}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_set_table_budget(db, "sensor_data", "not json"), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_set_table_budget(db, "nope", "{\"disk_budget_bytes\": 5}"), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_create_table(db, "z", "{\"disk_budget_bytes\": 0}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_table_stats(db, "nope", &stats), TIDELOG_NOT_FOUND);
    CHECK(stats == NULL);
    OK(tidelog_set_table_budget(db, "sensor_data", "{\"disk_budget_bytes\": null}"));
    OK(tidelog_table_stats(db, "sensor_data", &stats));
    CONTAINS(stats, "\"disk_budget_bytes\":null");
    tidelog_string_free(stats);
    OK(tidelog_close(db));
    tidelog_db_free(db);
}

int main(int argc, char **argv) {
    if (argc != 2)
        FAIL("usage: test_disk <scratch dir>");
    budgets(argv[1]);
    full_disk(argv[1]);
    printf("test_disk: ok\n");
    return 0;
}
