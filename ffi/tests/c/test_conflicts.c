/* Concurrent writes through the C ABI: the `conflict` table option,
 * counters, the conflict log and a C resolver, with two databases in one
 * process replicating over mutual TLS on 127.0.0.1. Every conflict is made
 * the same way: while their link is down, both nodes write the same key
 * (node a first, then b), so the writes are truly concurrent.
 *
 *   test_conflicts <scratch dir> <cert dir with ca, a and b> */
#include "testutil.h"

#include <pthread.h>

#define WAIT_S 60.0

/* ---- the resolver --------------------------------------------------------- */

struct resolver_state {
    pthread_mutex_t mu;
    int calls;
    int saw_case_fields; /* calls whose case had every documented field */
};

/* Answers by key: 1 writes a record of its own, 2 returns a code that is not
 * a tidelog_resolution, 3 writes text that is not JSON, 4 answers
 * TIDELOG_WRITE without a record, 5 keeps local (leaving a record it does
 * not ask for, which tidelog must still free), 6 deletes. */
static int32_t resolve(const char *case_json, void *user_data, tidelog_string **out_record) {
    struct resolver_state *s = user_data;
    int complete = strstr(case_json, "\"table\":\"res\"") && strstr(case_json, "\"local\":") &&
                   strstr(case_json, "\"local_stamp\":{") && strstr(case_json, "\"remote\":") &&
                   strstr(case_json, "\"remote_stamp\":{");
    pthread_mutex_lock(&s->mu);
    s->calls++;
    s->saw_case_fields += complete;
    pthread_mutex_unlock(&s->mu);
    if (*out_record != NULL)
        return 99; /* the contract says it starts NULL: make the test fail loudly */
    if (strstr(case_json, "\"key\":1,")) {
        if (tidelog_string_new("{\"id\":1,\"v\":\"resolved\"}", out_record) != TIDELOG_OK)
            return TIDELOG_TAKE_REMOTE;
        return TIDELOG_WRITE;
    }
    if (strstr(case_json, "\"key\":2,"))
        return 42;
    if (strstr(case_json, "\"key\":3,")) {
        if (tidelog_string_new("{not json", out_record) != TIDELOG_OK)
            return TIDELOG_TAKE_REMOTE;
        return TIDELOG_WRITE;
    }
    if (strstr(case_json, "\"key\":4,"))
        return TIDELOG_WRITE;
    if (strstr(case_json, "\"key\":5,")) {
        if (tidelog_string_new("{\"id\":5,\"v\":\"ignored\"}", out_record) != TIDELOG_OK)
            return TIDELOG_TAKE_REMOTE;
        return TIDELOG_KEEP_LOCAL;
    }
    if (strstr(case_json, "\"key\":6,"))
        return TIDELOG_DELETE;
    return TIDELOG_TAKE_REMOTE;
}

/* ---- the log callback: the resolver's mistakes are reported there --------- */

struct log_state {
    pthread_mutex_t mu;
    int bad_code, bad_json, no_record;
};

static void on_log(int32_t level, const char *target, const char *message, void *user_data) {
    struct log_state *l = user_data;
    (void)level;
    if (strcmp(target, "tidelog::resolver") != 0)
        return;
    pthread_mutex_lock(&l->mu);
    l->bad_code += strstr(message, "not a tidelog_resolution") != NULL;
    l->bad_json += strstr(message, "not valid JSON") != NULL;
    l->no_record += strstr(message, "*out_record NULL") != NULL;
    pthread_mutex_unlock(&l->mu);
}

/* ---- helpers ---------------------------------------------------------------- */

static void start_tls(tidelog_db *db, const char *certs, const char *node) {
    char json[4096];
    snprintf(json, sizeof json,
             "{\"tls\": {\"cert\": \"%s/%s.pem\", \"key\": \"%s/%s.key\", \"ca\": \"%s/ca.pem\"},"
             " \"heartbeat_interval\": \"200ms\", \"idle_timeout\": \"3s\","
             " \"backoff_initial\": \"50ms\", \"backoff_max\": \"500ms\"}",
             certs, node, certs, node, certs);
    OK(tidelog_start_replication(db, json));
}

/* The string value of attribute "v" of a record, "" if none, "<none>" if
 * the record is absent. */
static void v_of(tidelog_db *db, const char *table, const char *key, char *out, size_t n) {
    tidelog_string *r = NULL;
    OK(tidelog_get(db, table, key, &r));
    if (r == NULL) {
        snprintf(out, n, "<none>");
        return;
    }
    const char *v = strstr(tidelog_string_data(r), "\"v\":\"");
    out[0] = '\0';
    if (v != NULL) {
        v += 5;
        size_t len = strcspn(v, "\"");
        snprintf(out, n, "%.*s", (int)(len < n - 1 ? len : n - 1), v);
    }
    tidelog_string_free(r);
}

static int64_t int_attr(tidelog_db *db, const char *table, const char *key, const char *attr) {
    tidelog_string *r = NULL;
    char needle[64];
    OK(tidelog_get(db, table, key, &r));
    if (r == NULL)
        return INT64_MIN;
    snprintf(needle, sizeof needle, "\"%s\":", attr);
    const char *p = strstr(tidelog_string_data(r), needle);
    int64_t v = p ? strtoll(p + strlen(needle), NULL, 10) : INT64_MIN;
    tidelog_string_free(r);
    return v;
}

/* Waits until `cond` holds, failing with `what` after WAIT_S. */
#define WAIT_FOR(what, cond)                                                     \
    do {                                                                         \
        double end_ = tu_now_s() + WAIT_S;                                       \
        while (!(cond)) {                                                        \
            if (tu_now_s() > end_)                                               \
                FAIL("timed out after %.0f s waiting for %s", WAIT_S, what);     \
            tu_sleep_ms(20);                                                     \
        }                                                                        \
    } while (0)

/* Whether `db`'s link to `peer` is down: removing a peer ends its link
 * asynchronously, and frames still in flight on it would turn the
 * concurrent writes below into sequential ones (nothing to log). */
static int link_down(tidelog_db *db, const char *peer) {
    tidelog_string *s = NULL;
    OK(tidelog_peer_status(db, peer, &s));
    int down = strstr(tidelog_string_data(s), "\"connected\":false") != NULL;
    tidelog_string_free(s);
    return down;
}

static int same_v(tidelog_db *a, tidelog_db *b, const char *table, const char *key) {
    char va[128], vb[128];
    v_of(a, table, key, va, sizeof va);
    v_of(b, table, key, vb, sizeof vb);
    return strcmp(va, vb) == 0;
}

static int v_is(tidelog_db *db, const char *table, const char *key, const char *want) {
    char v[128];
    v_of(db, table, key, v, sizeof v);
    return strcmp(v, want) == 0;
}

static int conflicts_have(tidelog_db *db, const char *needle) {
    tidelog_string *s = NULL;
    OK(tidelog_conflicts(db, &s));
    int found = strstr(tidelog_string_data(s), needle) != NULL;
    tidelog_string_free(s);
    return found;
}

static int all_reported(struct log_state *l) {
    pthread_mutex_lock(&l->mu);
    int all = l->bad_code > 0 && l->bad_json > 0 && l->no_record > 0;
    pthread_mutex_unlock(&l->mu);
    return all;
}

/* ---- the tests ---------------------------------------------------------------- */

static void table_option(tidelog_db *db) {
    tidelog_string *s = NULL;
    bool created = false;
    OK(tidelog_create_table(db, "opt_default", NULL));
    OK(tidelog_describe_table(db, "opt_default", &s));
    CONTAINS(s, "\"conflict\":\"lww\"");
    tidelog_string_free(s);
    const char *names[] = {"lww", "merge", "keep_local", "resolver"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char table[64], json[128], want[64];
        snprintf(table, sizeof table, "opt_%s", names[i]);
        snprintf(json, sizeof json, "{\"conflict\": \"%s\"}", names[i]);
        snprintf(want, sizeof want, "\"conflict\":\"%s\"", names[i]);
        OK(tidelog_ensure_table(db, table, json, &created));
        CHECK(created);
        OK(tidelog_describe_table(db, table, &s));
        CONTAINS(s, want);
        tidelog_string_free(s);
    }
    OK(tidelog_list_tables(db, &s));
    CONTAINS(s, "\"conflict\":\"keep_local\"");
    tidelog_string_free(s);
    /* Hostile values: refused with the option named, nothing created. */
    EXPECT(tidelog_create_table(db, "opt_bad", "{\"conflict\": \"newest\"}"), TIDELOG_INVALID_INPUT);
    CHECK(strstr(tu_err(), "conflict") != NULL);
    EXPECT(tidelog_create_table(db, "opt_bad", "{\"conflict\": 1}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_create_table(db, "opt_bad", "{\"conflict\": null}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_describe_table(db, "opt_bad", &s), TIDELOG_NOT_FOUND);
}

static void increments_local(tidelog_db *db) {
    uint64_t seq = 0;
    tidelog_txn *tx = NULL;
    OK(tidelog_create_table(db, "hits", NULL));
    OK(tidelog_increment(db, "hits", "\"home\"", "n", 5, &seq));
    CHECK(seq > 0);
    OK(tidelog_increment(db, "hits", "\"home\"", "n", -2, NULL));
    CHECK(int_attr(db, "hits", "\"home\"", "n") == 3);
    OK(tidelog_txn_begin(db, &tx));
    OK(tidelog_txn_increment(tx, "hits", "\"home\"", "n", 10));
    OK(tidelog_txn_increment(tx, "hits", "7", "n", 1));
    OK(tidelog_txn_commit(tx, NULL));
    EXPECT(tidelog_txn_increment(tx, "hits", "7", "n", 1), TIDELOG_INVALID_HANDLE);
    tidelog_txn_free(tx);
    CHECK(int_attr(db, "hits", "\"home\"", "n") == 13);
    CHECK(int_attr(db, "hits", "7", "n") == 1);

    /* Hostile arguments. */
    OK(tidelog_upsert(db, "hits", "{\"id\":\"text\",\"n\":\"many\"}", NULL));
    EXPECT(tidelog_increment(db, "hits", "\"text\"", "n", 1, NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_increment(db, "hits", "{bad", "n", 1, NULL), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_increment(db, "hits", "1.5", "n", 1, NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_increment(db, "hits", "1", NULL, 1, NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_increment(db, "hits", "1", "id", 1, NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_increment(db, "nope", "1", "n", 1, NULL), TIDELOG_NOT_FOUND);
    OK(tidelog_increment(db, "hits", "\"big\"", "n", INT64_MAX, NULL));
    EXPECT(tidelog_increment(db, "hits", "\"big\"", "n", 1, NULL), TIDELOG_INVALID_INPUT);
    CHECK(int_attr(db, "hits", "\"big\"", "n") == INT64_MAX);
}

static void resolver_arguments(tidelog_db *db, struct resolver_state *rs) {
    bool was = true;
    EXPECT(tidelog_set_conflict_resolver(db, "res", NULL, rs), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_set_conflict_resolver(db, "missing", resolve, rs), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_set_conflict_resolver(NULL, "res", resolve, rs), TIDELOG_NULL_ARGUMENT);
    OK(tidelog_clear_conflict_resolver(db, "res", &was));
    CHECK(!was);
    /* Set, replace, clear, set again: the last one stays. */
    OK(tidelog_set_conflict_resolver(db, "res", resolve, rs));
    OK(tidelog_set_conflict_resolver(db, "res", resolve, rs));
    OK(tidelog_clear_conflict_resolver(db, "res", &was));
    CHECK(was);
    OK(tidelog_clear_conflict_resolver(db, "res", NULL));
    OK(tidelog_set_conflict_resolver(db, "res", resolve, rs));
}

static void prepare(tidelog_db *db, const char *node) {
    char rec[128];
    snprintf(rec, sizeof rec, "{\"id\":1,\"v\":\"%s\"}", node);
    OK(tidelog_upsert(db, "doc", rec, NULL));
    OK(tidelog_increment(db, "counters", "\"c\"", "n", strcmp(node, "a") == 0 ? 3 : 4, NULL));
    if (strcmp(node, "a") == 0)
        OK(tidelog_increment(db, "counters", "\"c\"", "n", 3, NULL));
    for (int k = 1; k <= 6; k++) {
        snprintf(rec, sizeof rec, "{\"id\":%d,\"v\":\"%s%d\"}", k, node, k);
        OK(tidelog_upsert(db, "res", rec, NULL));
    }
}

/* Each node writes a marker into every table; returns when each has the
 * other's: the link is up and the first sync done. */
static void meet(tidelog_db *a, tidelog_db *b) {
    const char *tables[] = {"doc", "counters", "res"};
    for (size_t i = 0; i < 3; i++) {
        OK(tidelog_upsert(a, tables[i], "{\"id\":\"from-a\"}", NULL));
        OK(tidelog_upsert(b, tables[i], "{\"id\":\"from-b\"}", NULL));
    }
    for (size_t i = 0; i < 3; i++) {
        WAIT_FOR("a's marker on b", !v_is(b, tables[i], "\"from-a\"", "<none>"));
        WAIT_FOR("b's marker on a", !v_is(a, tables[i], "\"from-b\"", "<none>"));
    }
}

int main(int argc, char **argv) {
    if (argc != 3)
        FAIL("usage: test_conflicts <scratch dir> <cert dir>");
    const char *certs = argv[2];
    char dir[4096], json[4096];
    tidelog_db *a = NULL, *b = NULL;
    tidelog_string *addr = NULL, *s = NULL;
    struct resolver_state rs_a, rs_b;
    struct log_state logs;
    memset(&rs_a, 0, sizeof rs_a);
    memset(&rs_b, 0, sizeof rs_b);
    memset(&logs, 0, sizeof logs);
    pthread_mutex_init(&rs_a.mu, NULL);
    pthread_mutex_init(&rs_b.mu, NULL);
    pthread_mutex_init(&logs.mu, NULL);
    OK(tidelog_set_log_callback(on_log, &logs, 2 /* warn */));

    snprintf(dir, sizeof dir, "%s/conflicts_a", argv[1]);
    OK(tidelog_open(dir, "{\"node_name\": \"a\"}", &a));
    snprintf(dir, sizeof dir, "%s/conflicts_b", argv[1]);
    OK(tidelog_open(dir, "{\"node_name\": \"b\"}", &b));

    table_option(a);
    increments_local(a);

    /* The nodes meet once (so the first, whole-table sync is behind them),
     * then b drops the link, both write the same keys, and b dials again:
     * what each wrote meanwhile arrives through the log, concurrently. */
    OK(tidelog_create_table(a, "doc", NULL));
    OK(tidelog_create_table(a, "counters", NULL));
    OK(tidelog_create_table(a, "res", "{\"conflict\": \"resolver\"}"));
    OK(tidelog_create_table(b, "doc", NULL));
    OK(tidelog_create_table(b, "counters", NULL));
    OK(tidelog_create_table(b, "res", "{\"conflict\": \"resolver\"}"));
    const char *tables = "[{\"table\": \"doc\", \"publish\": true, \"subscribe\": true},"
                         " {\"table\": \"counters\", \"publish\": true, \"subscribe\": true},"
                         " {\"table\": \"res\", \"publish\": true, \"subscribe\": true}]";
    start_tls(a, certs, "a");
    start_tls(b, certs, "b");
    snprintf(json, sizeof json, "{\"name\": \"b\", \"tables\": %s}", tables);
    OK(tidelog_add_peer(a, json));
    OK(tidelog_listen(a, "127.0.0.1:0", &addr));
    snprintf(json, sizeof json, "{\"name\": \"a\", \"address\": \"%s\", \"tables\": %s}",
             tidelog_string_data(addr), tables);
    OK(tidelog_add_peer(b, json));
    meet(a, b);
    OK(tidelog_remove_peer(b, "a"));
    WAIT_FOR("a to see b's link end", link_down(a, "b"));

    prepare(a, "a");
    tu_sleep_ms(5); /* b's writes are the later ones */
    prepare(b, "b");
    resolver_arguments(a, &rs_a);
    OK(tidelog_set_conflict_resolver(b, "res", resolve, &rs_b));
    OK(tidelog_add_peer(b, json));

    /* Last writer wins on `doc`, and both logs say who lost. */
    WAIT_FOR("doc 1 = b on a", v_is(a, "doc", "1", "b"));
    CHECK(v_is(b, "doc", "1", "b"));
    OK(tidelog_conflicts(a, &s));
    CONTAINS(s, "\"table\":\"doc\"");
    CONTAINS(s, "\"lost\":\"local\"");
    CONTAINS(s, "\"rule\":\"lww\"");
    CONTAINS(s, "\"loser_origin\":\"a\"");
    CONTAINS(s, "\"winner_origin\":\"b\"");
    tidelog_string_free(s);
    WAIT_FOR("b's conflict log", conflicts_have(b, "\"lost\":\"remote\""));
    /* The same entries as the system table `_conflicts`. */
    OK(tidelog_scan(a, "_conflicts", NULL, &s));
    CONTAINS(s, "\"table\":\"doc\"");
    CONTAINS(s, "\"id\":\"a:");
    tidelog_string_free(s);
    uint64_t dropped = 99;
    OK(tidelog_conflicts_dropped(a, &dropped));
    CHECK(dropped == 0);
    EXPECT(tidelog_conflicts(a, NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_conflicts_dropped(a, NULL), TIDELOG_NULL_ARGUMENT);

    /* Counters from two nodes add up: a added 3 + 3, b added 4. */
    WAIT_FOR("counter = 10 on a", int_attr(a, "counters", "\"c\"", "n") == 10);
    WAIT_FOR("counter = 10 on b", int_attr(b, "counters", "\"c\"", "n") == 10);

    /* The resolver's record wins on both nodes. */
    WAIT_FOR("res 1 resolved on a", v_is(a, "res", "1", "resolved"));
    WAIT_FOR("res 1 resolved on b", v_is(b, "res", "1", "resolved"));
    /* A delete as the answer. */
    WAIT_FOR("res 6 deleted on a", v_is(a, "res", "6", "<none>"));
    WAIT_FOR("res 6 deleted on b", v_is(b, "res", "6", "<none>"));
    /* Bad answers count as "take remote"; the nodes still converge. */
    WAIT_FOR("res 2 converged", same_v(a, b, "res", "2"));
    WAIT_FOR("res 3 converged", same_v(a, b, "res", "3"));
    WAIT_FOR("res 4 converged", same_v(a, b, "res", "4"));
    WAIT_FOR("res 5 converged", same_v(a, b, "res", "5"));
    WAIT_FOR("the bad answers reached the log callback", all_reported(&logs));
    pthread_mutex_lock(&rs_a.mu);
    pthread_mutex_lock(&rs_b.mu);
    printf("resolver calls: a %d, b %d\n", rs_a.calls, rs_b.calls);
    CHECK(rs_a.calls + rs_b.calls >= 6);
    CHECK(rs_a.saw_case_fields == rs_a.calls && rs_b.saw_case_fields == rs_b.calls);
    pthread_mutex_unlock(&rs_b.mu);
    pthread_mutex_unlock(&rs_a.mu);

    /* Closing with a resolver still installed: close waits out a call in
     * progress, so the states may go right after (ASan would see a late
     * call). */
    OK(tidelog_close(a));
    EXPECT(tidelog_set_conflict_resolver(a, "res", resolve, &rs_a), TIDELOG_CLOSED);
    tidelog_db_free(b); /* freeing without closing first */
    tidelog_db_free(a);
    OK(tidelog_set_log_callback(NULL, NULL, 0));
    tidelog_string_free(addr);
    pthread_mutex_destroy(&rs_a.mu);
    pthread_mutex_destroy(&rs_b.mu);
    pthread_mutex_destroy(&logs.mu);
    printf("test_conflicts: ok\n");
    return 0;
}
