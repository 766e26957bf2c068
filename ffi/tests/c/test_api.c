/* Every function of tidelog.h, with every error path the boundary checks:
 * NULL pointers, invalid UTF-8, invalid JSON, JSON of the wrong shape,
 * closed databases, freed / forged / mixed-up handles, panics.
 * Usage: test_api <scratch dir> */
#include "testutil.h"

#include <pthread.h>

static const char BAD_UTF8[] = {'t', (char)0xff, (char)0xfe, 0};

/* ---- callback state ------------------------------------------------------ */

typedef struct {
    pthread_mutex_t mu;
    int events;
    int remote_events;
    char last[4096];
    tidelog_db *db;        /* for callbacks that call back into tidelog */
    tidelog_subscription *self;
    int wrote_back;
    int writeback_status;
} cb_state;

static void cb_init(cb_state *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
}

static int cb_events(cb_state *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->events;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void wait_events(cb_state *s, int n) {
    double deadline = tu_now_s() + 10.0;
    while (cb_events(s) < n) {
        if (tu_now_s() > deadline)
            FAIL("timed out waiting for %d events (have %d)", n, cb_events(s));
        tu_sleep_ms(5);
    }
}

/* Counts events and keeps the last one. */
static void on_change(const char *event_json, void *user_data) {
    cb_state *s = user_data;
    pthread_mutex_lock(&s->mu);
    s->events++;
    if (strstr(event_json, "\"local\":false"))
        s->remote_events++;
    snprintf(s->last, sizeof s->last, "%s", event_json);
    pthread_mutex_unlock(&s->mu);
}

/* Writes into another table from inside the callback (allowed). */
static void on_change_write_back(const char *event_json, void *user_data) {
    cb_state *s = user_data;
    (void)event_json;
    tidelog_status st = tidelog_upsert(s->db, "alerts", "{\"id\": \"from-callback\"}", NULL);
    tidelog_string *rec = NULL;
    tidelog_status st2 = tidelog_get(s->db, "alerts", "\"from-callback\"", &rec);
    tidelog_string_free(rec);
    pthread_mutex_lock(&s->mu);
    s->writeback_status = st != TIDELOG_OK ? (int)st : (int)st2;
    s->wrote_back++;
    s->events++;
    pthread_mutex_unlock(&s->mu);
}

/* Unsubscribes itself on the first event. */
static void on_change_unsubscribe_self(const char *event_json, void *user_data) {
    cb_state *s = user_data;
    (void)event_json;
    tidelog_status st = tidelog_unsubscribe(s->self);
    pthread_mutex_lock(&s->mu);
    s->writeback_status = (int)st;
    s->events++;
    pthread_mutex_unlock(&s->mu);
}

/* Closes its own database from inside the callback (allowed). */
static void on_change_close_db(const char *event_json, void *user_data) {
    cb_state *s = user_data;
    (void)event_json;
    tidelog_status st = tidelog_close(s->db);
    pthread_mutex_lock(&s->mu);
    s->writeback_status = (int)st;
    s->events++;
    pthread_mutex_unlock(&s->mu);
}

/* ---- sections -------------------------------------------------------------- */

static void test_static_calls(void) {
    CHECK(tidelog_abi_version() == TIDELOG_ABI_VERSION);
    const char *v = tidelog_version();
    CHECK(v != NULL && v[0] >= '0' && v[0] <= '9');
    /* The header's version is the library's, and its parts spell it. */
    CHECK(strcmp(TIDELOG_VERSION, v) == 0);
    char parts[64];
    snprintf(parts, sizeof parts, "%d.%d.%d", TIDELOG_VERSION_MAJOR, TIDELOG_VERSION_MINOR,
             TIDELOG_VERSION_PATCH);
    CHECK(strcmp(parts, TIDELOG_VERSION) == 0);
    CHECK(strcmp(tidelog_status_name(TIDELOG_OK), "TIDELOG_OK") == 0);
    CHECK(strcmp(tidelog_status_name(TIDELOG_NOT_FOUND), "TIDELOG_NOT_FOUND") == 0);
    CHECK(strcmp(tidelog_status_name(TIDELOG_PANIC), "TIDELOG_PANIC") == 0);
    CHECK(strcmp(tidelog_status_name(-1), "TIDELOG_UNKNOWN_STATUS") == 0);
    CHECK(strcmp(tidelog_status_name(9999), "TIDELOG_UNKNOWN_STATUS") == 0);
    static const int codes[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 100, 101, 102, 103, 104};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        CHECK(strcmp(tidelog_status_name(codes[i]), "TIDELOG_UNKNOWN_STATUS") != 0);
    CHECK(tidelog_last_error() == NULL);

    /* The panic barrier: a panic inside Rust becomes a status. */
    EXPECT(tidelog_selftest_panic(), TIDELOG_PANIC);
    CHECK(strstr(tidelog_last_error(), "deliberate panic") != NULL);
    /* (The next successful call clears the message: OK() checks that.) */
}

static void test_open_errors(const char *base) {
    char dir[1024];
    tu_path(dir, sizeof dir, base, "open-errors");
    tidelog_db *db = (tidelog_db *)0x10; /* must be reset to NULL on failure */
    EXPECT(tidelog_open(NULL, "{\"node_name\": \"n1\"}", &db), TIDELOG_NULL_ARGUMENT);
    CHECK(db == NULL);
    EXPECT(tidelog_open(dir, NULL, &db), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_open(dir, "{\"node_name\": \"n1\"}", NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_open(BAD_UTF8, "{\"node_name\": \"n1\"}", &db), TIDELOG_INVALID_UTF8);
    EXPECT(tidelog_open(dir, BAD_UTF8, &db), TIDELOG_INVALID_UTF8);
    EXPECT(tidelog_open(dir, "{\"node_name\": ", &db), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_open(dir, "[]", &db), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_open(dir, "{\"nodename\": \"n1\"}", &db), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_open(dir, "{\"node_name\": \"n1\", \"engine\": \"rocks\"}", &db),
           TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_open(dir, "{\"node_name\": \"n1\", \"durability\": \"sometimes\"}", &db),
           TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_open(dir, "{\"node_name\": \"n1\", \"durability\": {\"grouped_ms\": 0}}", &db),
           TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_open(dir, "{\"node_name\": \"not a dns name!\"}", &db), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_open(dir, "{\"node_name\": \"n1\", \"memory_budget\": 1}", &db),
           TIDELOG_INVALID_INPUT);
    CHECK(db == NULL);
}

static void test_tables(tidelog_db *db) {
    tidelog_string *s = NULL;
    OK(tidelog_create_table(db, "sensor_data", "{\"indexes\": [\"sensor\"], \"expiration\": 3600}"));
    EXPECT(tidelog_create_table(db, "sensor_data", NULL), TIDELOG_ALREADY_EXISTS);
    EXPECT(tidelog_create_table(db, "__reserved", NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_create_table(db, "t2", "{\"indexes\": "), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_create_table(db, "t2", "{\"index\": [\"a\"]}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_create_table(db, NULL, NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_create_table(db, BAD_UTF8, NULL), TIDELOG_INVALID_UTF8);
    EXPECT(tidelog_create_table(NULL, "t2", NULL), TIDELOG_NULL_ARGUMENT);

    bool created = false;
    OK(tidelog_ensure_table(db, "alerts", NULL, &created));
    CHECK(created);
    OK(tidelog_ensure_table(db, "alerts", NULL, &created));
    CHECK(!created);
    OK(tidelog_ensure_table(db, "thresholds", "{\"primary_key\": \"sensor\"}", NULL));
    EXPECT(tidelog_ensure_table(db, "x", "{\"primary_key\": 5}", &created), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_ensure_table(db, NULL, NULL, NULL), TIDELOG_NULL_ARGUMENT);

    OK(tidelog_create_table(db, "scratch", NULL));
    OK(tidelog_list_tables(db, &s));
    CONTAINS(s, "\"name\":\"sensor_data\"");
    CONTAINS(s, "\"name\":\"scratch\"");
    tidelog_string_free(s);
    s = NULL;
    EXPECT(tidelog_list_tables(db, NULL), TIDELOG_NULL_ARGUMENT);

    OK(tidelog_describe_table(db, "sensor_data", &s));
    CONTAINS(s, "\"indexes\":[\"sensor\"]");
    CONTAINS(s, "\"expiration\":3600");
    tidelog_string_free(s);
    s = (tidelog_string *)0x10;
    EXPECT(tidelog_describe_table(db, "nope", &s), TIDELOG_NOT_FOUND);
    CHECK(s == NULL);
    EXPECT(tidelog_describe_table(db, NULL, &s), TIDELOG_NULL_ARGUMENT);

    OK(tidelog_drop_table(db, "scratch"));
    EXPECT(tidelog_drop_table(db, "scratch"), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_drop_table(db, BAD_UTF8), TIDELOG_INVALID_UTF8);
}

static void test_writes(tidelog_db *db) {
    uint64_t seq = 99, count = 0;
    char big[6000];
    OK(tidelog_insert(db, "sensor_data", "{\"id\": 1, \"sensor\": \"s-1\", \"value\": 20.5}", &seq));
    CHECK(seq > 0);
    uint64_t first = seq;
    OK(tidelog_insert(db, "sensor_data", "{\"id\": 2, \"sensor\": \"s-1\", \"value\": 21}", NULL));
    OK(tidelog_upsert(db, "sensor_data", "{\"id\": 3, \"sensor\": \"s-2\", \"value\": 22}", &seq));
    CHECK(seq == first + 2);
    OK(tidelog_upsert(db, "sensor_data", "{\"id\": \"k-4\", \"sensor\": \"s-3\", \"value\": 1}", NULL));
    OK(tidelog_count(db, "sensor_data", &count));
    CHECK(count == 4);

    /* Every bad input fails with a typed error and changes nothing. */
    seq = 99;
    EXPECT(tidelog_insert(db, "sensor_data", "{\"id\": 1}", &seq), TIDELOG_ALREADY_EXISTS);
    CHECK(seq == 0);
    EXPECT(tidelog_insert(db, "missing", "{\"id\": 1}", NULL), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_insert(db, "sensor_data", "[1, 2]", NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_insert(db, "sensor_data", "{\"x\": 1}", NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_insert(db, "sensor_data", "{\"id\": 1.5}", NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_insert(db, "sensor_data", "{\"id\": true}", NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_insert(db, "sensor_data", "{\"id\": 7,", NULL), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_insert(db, "sensor_data", BAD_UTF8, NULL), TIDELOG_INVALID_UTF8);
    EXPECT(tidelog_insert(db, "sensor_data", NULL, NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_insert(db, NULL, "{\"id\": 8}", NULL), TIDELOG_NULL_ARGUMENT);
    memset(big, 'x', sizeof big);
    memcpy(big, "{\"id\": 9, \"blob\": \"", 19);
    memcpy(big + sizeof big - 3, "\"}", 3);
    EXPECT(tidelog_insert(db, "sensor_data", big, NULL), TIDELOG_INVALID_INPUT); /* > max_record_bytes */
    EXPECT(tidelog_upsert(db, "sensor_data", "\"just a string\"", NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_upsert(db, "sensor_data", "{", NULL), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_upsert(NULL, "sensor_data", "{\"id\": 1}", NULL), TIDELOG_NULL_ARGUMENT);
    OK(tidelog_count(db, "sensor_data", &count));
    CHECK(count == 4);

    OK(tidelog_update(db, "sensor_data", "{\"id\": 1, \"value\": 30, \"note\": \"hot\"}", &seq));
    tidelog_string *s = NULL;
    OK(tidelog_get(db, "sensor_data", "1", &s));
    CONTAINS(s, "\"value\":30");
    CONTAINS(s, "\"sensor\":\"s-1\""); /* merged, not replaced */
    CONTAINS(s, "\"note\":\"hot\"");
    tidelog_string_free(s);
    EXPECT(tidelog_update(db, "sensor_data", "{\"id\": 404, \"value\": 1}", NULL), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_update(db, "sensor_data", "{\"value\": 1}", NULL), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_update(db, "sensor_data", "nope", NULL), TIDELOG_INVALID_JSON);

    /* Stored as written, attribute order included (outer spaces go). */
    OK(tidelog_upsert(db, "sensor_data", "{ \"sensor\": \"s-8\", \"id\": 51, \"v\": 1e2 }", NULL));
    OK(tidelog_get(db, "sensor_data", "51", &s));
    CONTAINS(s, "\"sensor\":\"s-8\",\"id\":51,\"v\":1e2}");
    tidelog_string_free(s);
    OK(tidelog_delete(db, "sensor_data", "51", NULL));

    bool existed = false;
    OK(tidelog_upsert(db, "sensor_data", "{\"id\": 50, \"sensor\": \"s-9\"}", NULL));
    OK(tidelog_delete(db, "sensor_data", "50", &existed));
    CHECK(existed);
    OK(tidelog_delete(db, "sensor_data", "50", &existed));
    CHECK(!existed);
    OK(tidelog_delete(db, "sensor_data", "\"no-such-key\"", NULL));
    EXPECT(tidelog_delete(db, "sensor_data", "1.5", &existed), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_delete(db, "sensor_data", "{}", &existed), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_delete(db, "sensor_data", "{", &existed), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_delete(db, "missing", "1", &existed), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_delete(db, "sensor_data", NULL, &existed), TIDELOG_NULL_ARGUMENT);
}

static void test_reads(tidelog_db *db) {
    tidelog_string *s = NULL;
    OK(tidelog_get(db, "sensor_data", "2", &s));
    CHECK(s != NULL);
    CONTAINS(s, "\"__createdtime__\":");
    CONTAINS(s, "\"__updatedtime__\":");
    CONTAINS(s, "\"id\":2");
    CHECK(tidelog_string_len(s) == strlen(tidelog_string_data(s)));
    tidelog_string_free(s);

    s = (tidelog_string *)0x10;
    OK(tidelog_get(db, "sensor_data", "12345", &s));
    CHECK(s == NULL); /* missing record: OK and NULL */
    OK(tidelog_get(db, "sensor_data", "\"k-4\"", &s));
    CONTAINS(s, "\"sensor\":\"s-3\"");
    tidelog_string_free(s);
    EXPECT(tidelog_get(db, "sensor_data", "[1]", &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_get(db, "sensor_data", "1 2", &s), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_get(db, "nope", "1", &s), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_get(db, "sensor_data", "1", NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_get(db, "sensor_data", BAD_UTF8, &s), TIDELOG_INVALID_UTF8);

    OK(tidelog_get_many(db, "sensor_data", "[1, 999, \"k-4\"]", &s));
    CONTAINS(s, "\"id\":1");
    CONTAINS(s, ",null,");
    CONTAINS(s, "\"id\":\"k-4\"");
    tidelog_string_free(s);
    EXPECT(tidelog_get_many(db, "sensor_data", "1", &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_get_many(db, "sensor_data", "[1, null]", &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_get_many(db, "sensor_data", "[", &s), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_get_many(db, "sensor_data", "[]", NULL), TIDELOG_NULL_ARGUMENT);

    OK(tidelog_scan(db, "sensor_data", NULL, &s));
    CONTAINS(s, "\"id\":1,"); /* integers first, then strings */
    CONTAINS(s, "\"id\":\"k-4\"");
    tidelog_string_free(s);
    OK(tidelog_scan(db, "sensor_data", "{\"gte\": 2, \"lt\": 3}", &s));
    CONTAINS(s, "\"id\":2");
    NOT_CONTAINS(s, "\"id\":3");
    NOT_CONTAINS(s, "\"id\":1,");
    tidelog_string_free(s);
    OK(tidelog_scan(db, "sensor_data", "{\"reverse\": true, \"limit\": 1}", &s));
    CONTAINS(s, "\"id\":\"k-4\"");
    NOT_CONTAINS(s, "\"id\":3");
    tidelog_string_free(s);
    OK(tidelog_scan(db, "sensor_data", "{\"gt\": \"k-4\"}", &s));
    CHECK(strcmp(tidelog_string_data(s), "[]") == 0);
    tidelog_string_free(s);
    EXPECT(tidelog_scan(db, "sensor_data", "{\"gt\": 1, \"gte\": 2}", &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_scan(db, "sensor_data", "{\"from\": 1}", &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_scan(db, "sensor_data", "{\"gt\": true}", &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_scan(db, "sensor_data", "{\"limit\": -1}", &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_scan(db, "sensor_data", "{", &s), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_scan(db, "nope", NULL, &s), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_scan(db, "sensor_data", NULL, NULL), TIDELOG_NULL_ARGUMENT);

    OK(tidelog_find(db, "sensor_data", "sensor", "{\"gte\": \"s-1\", \"lte\": \"s-2\"}", &s));
    CONTAINS(s, "\"id\":1");
    CONTAINS(s, "\"id\":3");
    NOT_CONTAINS(s, "k-4");
    tidelog_string_free(s);
    OK(tidelog_find(db, "sensor_data", "sensor", NULL, &s));
    CONTAINS(s, "k-4");
    tidelog_string_free(s);
    OK(tidelog_find(db, "sensor_data", "id", "{\"gt\": 2, \"limit\": 5}", &s)); /* primary key */
    CONTAINS(s, "\"id\":3");
    tidelog_string_free(s);
    EXPECT(tidelog_find(db, "sensor_data", "value", NULL, &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_find(db, "sensor_data", "sensor", "{\"reverse\": true}", &s),
           TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_find(db, "sensor_data", "sensor", "{\"gte\": [1]}", &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_find(db, "sensor_data", "sensor", "x", &s), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_find(db, "sensor_data", NULL, NULL, &s), TIDELOG_NULL_ARGUMENT);

    OK(tidelog_find_eq(db, "sensor_data", "sensor", "\"s-1\"", &s));
    CONTAINS(s, "\"id\":1");
    CONTAINS(s, "\"id\":2");
    NOT_CONTAINS(s, "\"id\":3");
    tidelog_string_free(s);
    EXPECT(tidelog_find_eq(db, "sensor_data", "sensor", "\"s-1", &s), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_find_eq(db, "sensor_data", "nope", "1", &s), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_find_eq(db, "sensor_data", "sensor", NULL, &s), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_find_eq(db, "sensor_data", "sensor", "1", NULL), TIDELOG_NULL_ARGUMENT);

    uint64_t n = 77;
    EXPECT(tidelog_count(db, "nope", &n), TIDELOG_NOT_FOUND);
    CHECK(n == 0);
    EXPECT(tidelog_count(db, "sensor_data", NULL), TIDELOG_NULL_ARGUMENT);
}

static void test_log(tidelog_db *db) {
    uint64_t first = 0, last = 0;
    tidelog_string *s = NULL;
    OK(tidelog_log_bounds(db, &first, &last));
    CHECK(first == 1 && last >= 6);
    EXPECT(tidelog_log_bounds(db, NULL, &last), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_log_bounds(db, &first, NULL), TIDELOG_NULL_ARGUMENT);

    OK(tidelog_read_log(db, 1, 2, &s));
    CONTAINS(s, "\"seq\":1,");
    CONTAINS(s, "\"seq\":2,");
    NOT_CONTAINS(s, "\"seq\":3,");
    CONTAINS(s, "\"op\":\"put\"");
    CONTAINS(s, "\"local\":true");
    CONTAINS(s, "\"logged_ms\":");
    CONTAINS(s, "\"__createdtime__\":"); /* logged records carry their times */
    tidelog_string_free(s);
    OK(tidelog_read_log(db, last + 1, 10, &s));
    CHECK(strcmp(tidelog_string_data(s), "[]") == 0);
    tidelog_string_free(s);
    OK(tidelog_read_log(db, 1, 1000, &s));
    CONTAINS(s, "\"op\":\"delete\"");
    tidelog_string_free(s);
    EXPECT(tidelog_read_log(db, 1, 10, NULL), TIDELOG_NULL_ARGUMENT);

    OK(tidelog_read_log_since(db, 0, 1, &s));
    CONTAINS(s, "\"seq\":1,");
    tidelog_string_free(s);
    /* A day ahead: nothing yet. */
    OK(tidelog_read_log_since(db, ((uint64_t)time(NULL) + 86400) * 1000, 10, &s));
    CHECK(strcmp(tidelog_string_data(s), "[]") == 0);
    tidelog_string_free(s);
    OK(tidelog_read_log_since(db, UINT64_MAX, 10, &s)); /* far future: nothing */
    CHECK(strcmp(tidelog_string_data(s), "[]") == 0);
    tidelog_string_free(s);
    EXPECT(tidelog_read_log_since(NULL, 0, 10, &s), TIDELOG_NULL_ARGUMENT);
}

static void test_transactions(tidelog_db *db) {
    tidelog_txn *t = NULL;
    uint64_t seq = 0, count = 0, before = 0;
    tidelog_string *s = NULL;

    OK(tidelog_txn_begin(db, &t));
    OK(tidelog_txn_insert(t, "sensor_data", "{\"id\": 100, \"sensor\": \"s-5\"}"));
    OK(tidelog_txn_upsert(t, "alerts", "{\"id\": \"a-1\", \"reading\": 100}"));
    OK(tidelog_txn_update(t, "sensor_data", "{\"id\": 2, \"value\": 99}"));
    OK(tidelog_txn_delete(t, "sensor_data", "3"));
    /* A bad write is refused at staging; the transaction stays usable. */
    EXPECT(tidelog_txn_insert(t, "sensor_data", "[]"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_txn_upsert(t, "missing", "{\"id\": 1}"), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_txn_update(t, "sensor_data", "{"), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_txn_delete(t, "sensor_data", "null"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_txn_delete(t, NULL, "1"), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_txn_upsert(t, "alerts", BAD_UTF8), TIDELOG_INVALID_UTF8);
    OK(tidelog_txn_commit(t, &seq));
    CHECK(seq > 0);
    /* One transaction: one log entry with all four writes. */
    OK(tidelog_read_log(db, seq, 1, &s));
    CONTAINS(s, "\"table\":\"alerts\"");
    CONTAINS(s, "\"op\":\"delete\"");
    tidelog_string_free(s);
    /* Finished: every further call on it is refused. */
    EXPECT(tidelog_txn_upsert(t, "alerts", "{\"id\": \"a-2\"}"), TIDELOG_INVALID_HANDLE);
    EXPECT(tidelog_txn_commit(t, NULL), TIDELOG_INVALID_HANDLE);
    tidelog_txn_free(t);
    EXPECT(tidelog_txn_commit(t, NULL), TIDELOG_INVALID_HANDLE); /* freed */
    tidelog_txn_free(t);                                         /* twice: harmless */

    /* Atomicity: a failing insert aborts the whole transaction. */
    OK(tidelog_count(db, "alerts", &before));
    OK(tidelog_txn_begin(db, &t));
    OK(tidelog_txn_upsert(t, "alerts", "{\"id\": \"a-new\"}"));
    OK(tidelog_txn_insert(t, "sensor_data", "{\"id\": 1}")); /* exists */
    seq = 5;
    EXPECT(tidelog_txn_commit(t, &seq), TIDELOG_ALREADY_EXISTS);
    CHECK(seq == 0);
    tidelog_txn_free(t);
    OK(tidelog_count(db, "alerts", &count));
    CHECK(count == before);

    /* Discarded when freed uncommitted; empty commit gives sequence 0. */
    OK(tidelog_txn_begin(db, &t));
    OK(tidelog_txn_upsert(t, "alerts", "{\"id\": \"never\"}"));
    tidelog_txn_free(t);
    OK(tidelog_get(db, "alerts", "\"never\"", &s));
    CHECK(s == NULL);
    OK(tidelog_txn_begin(db, &t));
    seq = 5;
    OK(tidelog_txn_commit(t, &seq));
    CHECK(seq == 0);
    tidelog_txn_free(t);

    /* Commit info as JSON: it is the start of the log entry the commit made
     * (the same seq, origin, stamp and stamp_ms, in the same order). */
    {
        tidelog_string *info = NULL, *entry = NULL;
        unsigned long long info_seq = 0;
        OK(tidelog_txn_begin(db, &t));
        OK(tidelog_txn_upsert(t, "alerts", "{\"id\": \"a-json\"}"));
        EXPECT(tidelog_txn_commit_json(t, NULL), TIDELOG_NULL_ARGUMENT); /* not consumed */
        OK(tidelog_txn_commit_json(t, &info));
        const char *text = tidelog_string_data(info);
        CHECK(sscanf(text, "{\"seq\":%llu,\"origin\":", &info_seq) == 1 && info_seq > 0);
        CONTAINS(info, "\"stamp\":{\"time\":");
        CONTAINS(info, "\"stamp_ms\":");
        OK(tidelog_read_log(db, (uint64_t)info_seq, 1, &entry));
        const char *log = tidelog_string_data(entry);
        size_t n = strlen(text);
        CHECK(n > 2 && log[0] == '[' && strncmp(log + 1, text, n - 1) == 0 && log[n] == ',');
        tidelog_string_free(entry);
        tidelog_string_free(info);
        info = (tidelog_string *)(uintptr_t)1;
        EXPECT(tidelog_txn_commit_json(t, &info), TIDELOG_INVALID_HANDLE);
        CHECK(info == NULL);
        tidelog_txn_free(t);

        OK(tidelog_txn_begin(db, &t)); /* a failed commit hands out nothing */
        OK(tidelog_txn_insert(t, "sensor_data", "{\"id\": 1}"));
        info = (tidelog_string *)(uintptr_t)1;
        EXPECT(tidelog_txn_commit_json(t, &info), TIDELOG_ALREADY_EXISTS);
        CHECK(info == NULL);
        tidelog_txn_free(t);

        OK(tidelog_txn_begin(db, &t)); /* empty: sequence 0 */
        OK(tidelog_txn_commit_json(t, &info));
        CHECK(strncmp(tidelog_string_data(info), "{\"seq\":0,", 9) == 0);
        tidelog_string_free(info);
        tidelog_txn_free(t);
        EXPECT(tidelog_txn_commit_json(NULL, &info), TIDELOG_NULL_ARGUMENT);
    }

    EXPECT(tidelog_txn_begin(db, NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_txn_begin(NULL, &t), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_txn_insert(NULL, "alerts", "{}"), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_txn_commit(NULL, NULL), TIDELOG_NULL_ARGUMENT);
    /* A database handle is not a transaction handle, and vice versa. */
    EXPECT(tidelog_txn_upsert((tidelog_txn *)db, "alerts", "{\"id\": 1}"), TIDELOG_INVALID_HANDLE);
    OK(tidelog_txn_begin(db, &t));
    EXPECT(tidelog_flush((tidelog_db *)t), TIDELOG_INVALID_HANDLE);
    tidelog_db_free((tidelog_db *)t); /* wrong kind: ignored */
    OK(tidelog_txn_commit(t, NULL));  /* still alive */
    tidelog_txn_free(t);
}

static void test_events(tidelog_db *db) {
    cb_state st, wb, self;
    tidelog_subscription *sub = NULL, *wsub = NULL, *ssub = NULL, *q = NULL;
    tidelog_string *ev = NULL;
    cb_init(&st);
    cb_init(&wb);
    cb_init(&self);

    OK(tidelog_subscribe(db, "sensor_data", on_change, &st, &sub));
    EXPECT(tidelog_subscribe(db, "sensor_data", NULL, &st, &wsub), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_subscribe(NULL, "sensor_data", on_change, &st, &wsub), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_subscribe(db, NULL, on_change, &st, &wsub), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_subscribe(db, "__bad", on_change, &st, &wsub), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_subscribe(db, "sensor_data", on_change, &st, NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_subscribe(db, BAD_UTF8, on_change, &st, &wsub), TIDELOG_INVALID_UTF8);

    OK(tidelog_upsert(db, "sensor_data", "{\"id\": 200, \"sensor\": \"s-ev\"}", NULL));
    OK(tidelog_delete(db, "sensor_data", "200", NULL));
    wait_events(&st, 2);
    pthread_mutex_lock(&st.mu);
    CHECK(strstr(st.last, "\"table\":\"sensor_data\"") != NULL);
    CHECK(strstr(st.last, "\"local\":true") != NULL);
    CHECK(strstr(st.last, "\"record\":null") != NULL); /* the delete */
    CHECK(strstr(st.last, "\"origin\":") != NULL);
    CHECK(strstr(st.last, "\"stamp_ms\":") != NULL);
    pthread_mutex_unlock(&st.mu);

    /* A callback may write into the database. */
    wb.db = db;
    OK(tidelog_subscribe(db, "thresholds", on_change_write_back, &wb, &wsub));
    OK(tidelog_upsert(db, "thresholds", "{\"sensor\": \"s-1\", \"max\": 50}", NULL));
    wait_events(&wb, 1);
    CHECK(wb.writeback_status == TIDELOG_OK);

    /* A callback may unsubscribe itself; it is then not called again. */
    OK(tidelog_subscribe(db, "alerts", on_change_unsubscribe_self, &self, &ssub));
    self.self = ssub;
    OK(tidelog_upsert(db, "alerts", "{\"id\": \"x-1\"}", NULL));
    wait_events(&self, 1);
    OK(tidelog_upsert(db, "alerts", "{\"id\": \"x-2\"}", NULL));
    OK(tidelog_upsert(db, "sensor_data", "{\"id\": 201, \"sensor\": \"s-ev\"}", NULL));
    wait_events(&st, 3); /* the other listener saw a later event ... */
    CHECK(cb_events(&self) == 1); /* ... this one did not */
    CHECK(self.writeback_status == TIDELOG_OK);

    /* Queue-backed subscription. */
    OK(tidelog_subscribe_queue(db, "alerts", &q));
    tidelog_subscription *bad = (tidelog_subscription *)0x10;
    EXPECT(tidelog_subscribe_queue(db, NULL, &bad), TIDELOG_NULL_ARGUMENT);
    CHECK(bad == NULL); /* out parameters are reset on failure */
    EXPECT(tidelog_subscribe_queue(NULL, "alerts", &bad), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_subscribe_queue(db, "alerts", NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_next_event(q, 0, &ev), TIDELOG_TIMEOUT);
    CHECK(ev == NULL);
    OK(tidelog_upsert(db, "alerts", "{\"id\": \"q-1\", \"n\": 1}", NULL));
    OK(tidelog_upsert(db, "alerts", "{\"id\": \"q-2\", \"n\": 2}", NULL));
    OK(tidelog_next_event(q, 5000, &ev));
    CONTAINS(ev, "\"id\":\"q-1\"");
    tidelog_string_free(ev);
    OK(tidelog_next_event(q, -1, &ev)); /* no limit, but one is queued */
    CONTAINS(ev, "\"id\":\"q-2\"");
    tidelog_string_free(ev);
    EXPECT(tidelog_next_event(q, 20, &ev), TIDELOG_TIMEOUT);
    EXPECT(tidelog_next_event(q, 0, NULL), TIDELOG_NULL_ARGUMENT);
    EXPECT(tidelog_next_event(sub, 0, &ev), TIDELOG_UNSUPPORTED); /* callback sub */
    EXPECT(tidelog_next_event((tidelog_subscription *)db, 0, &ev), TIDELOG_INVALID_HANDLE);
    OK(tidelog_upsert(db, "alerts", "{\"id\": \"q-3\"}", NULL));
    tu_sleep_ms(50); /* let it reach the queue */
    OK(tidelog_unsubscribe(q));
    OK(tidelog_unsubscribe(q)); /* twice is fine */
    /* What was queued is still delivered, then the end is reported. */
    OK(tidelog_next_event(q, 1000, &ev));
    CONTAINS(ev, "\"id\":\"q-3\"");
    tidelog_string_free(ev);
    EXPECT(tidelog_next_event(q, 1000, &ev), TIDELOG_CLOSED);
    tidelog_subscription_free(q);
    EXPECT(tidelog_next_event(q, 0, &ev), TIDELOG_INVALID_HANDLE);
    EXPECT(tidelog_unsubscribe(q), TIDELOG_INVALID_HANDLE);
    EXPECT(tidelog_unsubscribe(NULL), TIDELOG_NULL_ARGUMENT);
    tidelog_subscription_free(q);
    tidelog_subscription_free(NULL);

    OK(tidelog_unsubscribe(sub));
    int seen = cb_events(&st);
    OK(tidelog_upsert(db, "sensor_data", "{\"id\": 202, \"sensor\": \"s-ev\"}", NULL));
    tu_sleep_ms(50);
    CHECK(cb_events(&st) == seen); /* not called after unsubscribe returned */
    tidelog_subscription_free(sub);
    tidelog_subscription_free(wsub);
    tidelog_subscription_free(ssub);
    pthread_mutex_destroy(&st.mu);
    pthread_mutex_destroy(&wb.mu);
    pthread_mutex_destroy(&self.mu);
}

static void test_replication_errors(tidelog_db *db, const char *base) {
    tidelog_string *s = NULL;
    char json[2048];
    EXPECT(tidelog_add_peer(db, "{\"name\": \"cloud\"}"), TIDELOG_UNSUPPORTED); /* not started */
    EXPECT(tidelog_peer_status(db, "cloud", &s), TIDELOG_UNSUPPORTED);
    EXPECT(tidelog_replication_status(db, &s), TIDELOG_UNSUPPORTED);
    EXPECT(tidelog_listen(db, "127.0.0.1:0", NULL), TIDELOG_UNSUPPORTED);
    EXPECT(tidelog_wait_for_ack(db, "cloud", 1, 10), TIDELOG_UNSUPPORTED);
    EXPECT(tidelog_wait_for_delivery(db, 1, 10), TIDELOG_UNSUPPORTED);

    EXPECT(tidelog_start_replication(db, "{\"insecure\": tru"), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_start_replication(db, "{}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_start_replication(db, "{\"insecure\": true, \"tls\": {}}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_start_replication(db, "{\"insecure\": true, \"heartbeat\": 5}"),
           TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_start_replication(db, "{\"tls\": {\"cert\": \"a.pem\", \"key\": \"a.key\"}}"),
           TIDELOG_INVALID_INPUT); /* no CA */
    snprintf(json, sizeof json,
             "{\"tls\": {\"cert\": \"%s/none.pem\", \"key\": \"%s/none.key\", \"ca\": \"%s/ca.pem\"}}",
             base, base, base);
    EXPECT(tidelog_start_replication(db, json), TIDELOG_TLS); /* files missing */
    EXPECT(tidelog_start_replication(db, "{\"tls\": {\"cert_pem\": \"junk\", \"key_pem\": \"junk\", "
                                         "\"ca_pem\": \"junk\"}}"),
           TIDELOG_TLS);
    EXPECT(tidelog_start_replication(db, "{\"insecure\": true, \"heartbeat_ms\": 0}"),
           TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_start_replication(NULL, "{\"insecure\": true}"), TIDELOG_NULL_ARGUMENT);
    OK(tidelog_start_replication(db, "{\"insecure\": true, \"heartbeat_ms\": 100, "
                                     "\"idle_timeout_ms\": 1000, \"worker_threads\": 1}"));
    EXPECT(tidelog_start_replication(db, "{\"insecure\": true}"), TIDELOG_UNSUPPORTED);

    OK(tidelog_listen(db, "127.0.0.1:0", &s));
    CHECK(strncmp(tidelog_string_data(s), "127.0.0.1:", 10) == 0);
    tidelog_string_free(s);
    OK(tidelog_listen(db, "127.0.0.1:0", NULL));
    EXPECT(tidelog_listen(db, "not-an-address", &s), TIDELOG_PEER);
    CHECK(s == NULL);
    EXPECT(tidelog_listen(db, NULL, &s), TIDELOG_NULL_ARGUMENT);

    EXPECT(tidelog_add_peer(db, "{\"name\": \"cloud\", \"tables\": [{\"table\": \"alerts\", "
                                "\"publish\": \"yes\"}]}"),
           TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_add_peer(db, "{\"name\": \"n1\"}"), TIDELOG_INVALID_INPUT); /* itself */
    EXPECT(tidelog_add_peer(db, "{\"name\": \"cloud\", \"address\": \"nohost\"}"),
           TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_add_peer(db, "{\"name\": \"cloud\""), TIDELOG_INVALID_JSON);
    EXPECT(tidelog_add_peer(db, NULL), TIDELOG_NULL_ARGUMENT);
    OK(tidelog_add_peer(db, "{\"name\": \"cloud\", \"tables\": [{\"table\": \"alerts\", "
                            "\"publish\": true}, {\"table\": \"thresholds\", \"subscribe\": true}]}"));
    EXPECT(tidelog_add_peer(db, "{\"name\": \"cloud\"}"), TIDELOG_ALREADY_EXISTS);
    OK(tidelog_update_peer(db, "{\"name\": \"cloud\", \"tables\": [{\"table\": \"alerts\", "
                               "\"publish\": true}]}"));
    EXPECT(tidelog_update_peer(db, "{\"name\": \"other\"}"), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_update_peer(db, "{\"name\": 5}"), TIDELOG_INVALID_INPUT);
    EXPECT(tidelog_update_peer(db, "]"), TIDELOG_INVALID_JSON);

    OK(tidelog_peer_status(db, "cloud", &s));
    CONTAINS(s, "\"name\":\"cloud\"");
    CONTAINS(s, "\"connected\":false");
    CONTAINS(s, "\"table\":\"alerts\"");
    CONTAINS(s, "\"duplicates_received\":0");
    CONTAINS(s, "\"resyncs_sent\":0");
    CONTAINS(s, "\"last_resync_reason\":null");
    tidelog_string_free(s);
    EXPECT(tidelog_peer_status(db, "other", &s), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_peer_status(db, "cloud", NULL), TIDELOG_NULL_ARGUMENT);
    OK(tidelog_replication_status(db, &s));
    CONTAINS(s, "[{\"name\":\"cloud\"");
    tidelog_string_free(s);
    EXPECT(tidelog_replication_status(db, NULL), TIDELOG_NULL_ARGUMENT);

    uint64_t seq = 0;
    OK(tidelog_upsert(db, "alerts", "{\"id\": \"undelivered\"}", &seq));
    EXPECT(tidelog_wait_for_ack(db, "cloud", seq, 50), TIDELOG_TIMEOUT);
    /* The message says what the link looks like (cloud dials this node). */
    CHECK(strstr(tu_err(), "the link is down") != NULL);
    EXPECT(tidelog_wait_for_ack(db, "other", seq, 50), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_wait_for_ack(db, NULL, seq, 50), TIDELOG_NULL_ARGUMENT);
    OK(tidelog_wait_for_ack(db, "cloud", 0, UINT64_MAX)); /* nothing to wait for */
    /* Delivery: every peer this node publishes to, here the one offline. */
    EXPECT(tidelog_wait_for_delivery(db, seq, 50), TIDELOG_TIMEOUT);
    CHECK(strstr(tu_err(), "cloud") != NULL);
    EXPECT(tidelog_wait_for_delivery(db, UINT64_MAX, 50), TIDELOG_TIMEOUT); /* all so far */
    EXPECT(tidelog_wait_for_delivery(NULL, seq, 50), TIDELOG_NULL_ARGUMENT);
    OK(tidelog_wait_for_delivery(db, 0, UINT64_MAX)); /* nothing to wait for */

    OK(tidelog_remove_peer(db, "cloud"));
    EXPECT(tidelog_remove_peer(db, "cloud"), TIDELOG_NOT_FOUND);
    EXPECT(tidelog_remove_peer(db, BAD_UTF8), TIDELOG_INVALID_UTF8);
}

static void test_closed_and_freed(tidelog_db *db, const char *dir) {
    tidelog_string *s = NULL;
    tidelog_subscription *q = NULL;
    tidelog_txn *t = NULL;
    tidelog_db *again = NULL;

    OK(tidelog_subscribe_queue(db, "alerts", &q));
    OK(tidelog_txn_begin(db, &t));
    OK(tidelog_txn_upsert(t, "alerts", "{\"id\": \"late\"}"));
    OK(tidelog_flush(db));
    EXPECT(tidelog_flush(NULL), TIDELOG_NULL_ARGUMENT);

    /* The directory is locked while open. */
    EXPECT(tidelog_open(dir, "{\"node_name\": \"n1\"}", &again), TIDELOG_LOCKED);

    OK(tidelog_close(db));
    OK(tidelog_close(db)); /* twice is fine */
    EXPECT(tidelog_get(db, "alerts", "1", &s), TIDELOG_CLOSED);
    EXPECT(tidelog_upsert(db, "alerts", "{\"id\": 1}", NULL), TIDELOG_CLOSED);
    EXPECT(tidelog_create_table(db, "more", NULL), TIDELOG_CLOSED);
    EXPECT(tidelog_list_tables(db, &s), TIDELOG_CLOSED);
    EXPECT(tidelog_count(db, "alerts", &(uint64_t){0}), TIDELOG_CLOSED);
    EXPECT(tidelog_scan(db, "alerts", NULL, &s), TIDELOG_CLOSED);
    EXPECT(tidelog_read_log(db, 1, 1, &s), TIDELOG_CLOSED);
    EXPECT(tidelog_flush(db), TIDELOG_CLOSED);
    tidelog_txn *t2 = NULL;
    tidelog_subscription *q2 = NULL;
    EXPECT(tidelog_txn_begin(db, &t2), TIDELOG_CLOSED);
    EXPECT(tidelog_subscribe_queue(db, "alerts", &q2), TIDELOG_CLOSED);
    EXPECT(tidelog_subscribe(db, "alerts", on_change, NULL, &q2), TIDELOG_CLOSED);
    EXPECT(tidelog_start_replication(db, "{\"insecure\": true}"), TIDELOG_CLOSED);
    CHECK(t2 == NULL && q2 == NULL);
    EXPECT(tidelog_peer_status(db, "cloud", &s), TIDELOG_CLOSED);
    OK(tidelog_node_info(db, &s)); /* still describes itself */
    CONTAINS(s, "\"closed\":true");
    CONTAINS(s, "\"node_name\":\"n1\"");
    tidelog_string_free(s);
    EXPECT(tidelog_node_info(db, NULL), TIDELOG_NULL_ARGUMENT);

    /* Objects made before the close fail cleanly. */
    EXPECT(tidelog_txn_commit(t, NULL), TIDELOG_CLOSED);
    tidelog_txn_free(t);
    EXPECT(tidelog_next_event(q, 1000, &s), TIDELOG_CLOSED);

    /* Freed: every call says so; freeing again and NULL are harmless. */
    tidelog_db_free(db);
    EXPECT(tidelog_get(db, "alerts", "1", &s), TIDELOG_INVALID_HANDLE);
    EXPECT(tidelog_close(db), TIDELOG_INVALID_HANDLE);
    EXPECT(tidelog_node_info(db, &s), TIDELOG_INVALID_HANDLE);
    tidelog_db_free(db);
    tidelog_db_free(NULL);
    tidelog_txn_free(NULL);
    /* A forged pointer is never dereferenced. */
    EXPECT(tidelog_flush((tidelog_db *)(uintptr_t)0x5eed0), TIDELOG_INVALID_HANDLE);
    EXPECT(tidelog_txn_commit((tidelog_txn *)(uintptr_t)0x5eed0, NULL), TIDELOG_INVALID_HANDLE);
    /* Subscription freed after its database: fine. */
    tidelog_subscription_free(q);

    /* Strings: NULL is accepted everywhere. */
    CHECK(tidelog_string_data(NULL) == NULL);
    CHECK(tidelog_string_len(NULL) == 0);
    tidelog_string_free(NULL);

    /* Reopen: the data survived, the lock was released. */
    OK(tidelog_open(dir, "{\"node_name\": \"n1\"}", &again));
    OK(tidelog_get(again, "alerts", "\"a-1\"", &s));
    CONTAINS(s, "\"reading\":100");
    tidelog_string_free(s);
    EXPECT(tidelog_open(dir, "{\"node_name\": \"n2\"}", &db), TIDELOG_LOCKED);
    OK(tidelog_close(again));
    EXPECT(tidelog_open(dir, "{\"node_name\": \"n2\"}", &db), TIDELOG_INVALID_INPUT); /* name fixed */
    EXPECT(tidelog_open(dir, "{\"node_name\": \"n1\", \"engine\": \"sled\"}", &db),
           TIDELOG_INVALID_INPUT); /* engine fixed */
    tidelog_db_free(again);
}

/* Closing the database from inside its own callback is allowed. */
static void test_close_from_callback(const char *base) {
    char dir[1024];
    tidelog_db *db = NULL;
    tidelog_subscription *sub = NULL;
    cb_state st;
    cb_init(&st);
    tu_path(dir, sizeof dir, base, "close-from-callback");
    OK(tidelog_open(dir, "{\"node_name\": \"n3\", \"engine\": \"sled\", \"durability\": \"sync\"}", &db));
    OK(tidelog_create_table(db, "t", NULL));
    st.db = db;
    OK(tidelog_subscribe(db, "t", on_change_close_db, &st, &sub));
    OK(tidelog_upsert(db, "t", "{\"id\": 1}", NULL));
    wait_events(&st, 1);
    CHECK(st.writeback_status == TIDELOG_OK);
    EXPECT(tidelog_upsert(db, "t", "{\"id\": 2}", NULL), TIDELOG_CLOSED);
    tidelog_db_free(db);
    tidelog_subscription_free(sub);
    pthread_mutex_destroy(&st.mu);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <scratch dir>\n", argv[0]);
        return 2;
    }
    const char *base = argv[1];
    char dir[1024];
    tidelog_db *db = NULL;

    test_static_calls();
    test_open_errors(base);
    tu_path(dir, sizeof dir, base, "main");
    OK(tidelog_open(dir, "{\"node_name\": \"n1\", \"engine\": \"fjall\", \"durability\": "
                         "{\"grouped_ms\": 20}, \"max_record_bytes\": 4096, \"max_clock_skew_ms\": "
                         "60000, \"expiry_interval_ms\": 500, \"memory_budget\": 8388608}",
                    &db));
    CHECK(db != NULL);
    tidelog_string *info = NULL;
    OK(tidelog_node_info(db, &info));
    CONTAINS(info, "\"engine\":\"fjall\"");
    CONTAINS(info, "\"closed\":false");
    tidelog_string_free(info);

    test_tables(db);
    test_writes(db);
    test_reads(db);
    test_log(db);
    test_transactions(db);
    test_events(db);
    test_replication_errors(db, base);
    test_closed_and_freed(db, dir);
    test_close_from_callback(base);
    printf("test_api: all checks passed\n");
    return 0;
}
