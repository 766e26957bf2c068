/* The options schema through the C ABI: the units every binding shares,
 * and unknown or out-of-range options refused with a message that names
 * the option (by its path) and what it accepts.
 *
 * Usage: test_options <scratch dir> */
#include "testutil.h" /* first: it sets _POSIX_C_SOURCE */

/* The last error names every needle. */
static void error_says(const char *what, const char *needles[]) {
    const char *e = tidelog_last_error();
    for (const char **n = needles; *n; n++)
        if (e == NULL || strstr(e, *n) == NULL)
            FAIL("%s: expected \"%s\" in the error, got: %s", what, *n, e ? e : "(none)");
}

static void open_refused(const char *dir, const char *json, const char *needles[]) {
    tidelog_db *db = NULL;
    EXPECT(tidelog_open(dir, json, &db), TIDELOG_INVALID_INPUT);
    CHECK(db == NULL);
    error_says(json, needles);
}

int main(int argc, char **argv) {
    if (argc != 2) FAIL("usage: test_options <scratch dir>");
    char dir[4096];
    tu_path(dir, sizeof dir, argv[1], "options_db");

    open_refused(dir, "{\"node_name\": \"n1\", \"memory_budgit\": 8388608}",
                 (const char *[]){"open options", "memory_budgit", "memory_budget", NULL});
    open_refused(dir, "{\"node_name\": \"n1\", \"memory_budget\": \"1MiB\"}",
                 (const char *[]){"memory_budget", "between 4MiB and 1TiB", "got 1MiB", NULL});
    open_refused(dir, "{\"node_name\": \"n1\", \"max_clock_skew\": \"soon\"}",
                 (const char *[]){"max_clock_skew", "\"250ms\"", NULL});
    open_refused(dir, "{\"node_name\": \"n1\", \"retention\": {\"log_max_age\": \"0ms\"}}",
                 (const char *[]){"retention.log_max_age", "between 1s and", NULL});
    open_refused(dir, "{\"node_name\": \"n1\", \"retention\": {\"log_max\": 1}}",
                 (const char *[]){"retention", "log_max", "log_max_bytes", NULL});

    /* The units: strings with a unit, integer ms and bytes, older names. */
    tidelog_db *db = NULL;
    OK(tidelog_open(dir,
                    "{\"node_name\": \"n1\", \"flush_interval\": \"20ms\", \"memory_budget\": "
                    "\"8MiB\", \"max_clock_skew\": 30000, \"expiry_interval_ms\": 500, "
                    "\"retention\": {\"log_max_bytes\": \"32MiB\", \"log_max_age\": \"1d\"}}",
                    &db));

    EXPECT(tidelog_start_replication(db, "{\"insecure\": true, \"worker_threads\": 0}"),
           TIDELOG_INVALID_INPUT);
    error_says("worker_threads 0",
               (const char *[]){"replication.worker_threads", "between 1 and 256", NULL});
    EXPECT(tidelog_start_replication(db, "{\"insecure\": true, \"heartbeat_interval\": \"fast\"}"),
           TIDELOG_INVALID_INPUT);
    error_says("heartbeat fast", (const char *[]){"heartbeat_interval", "duration", NULL});
    EXPECT(tidelog_start_replication(db, "{\"insecure\": true, \"max_frame_bytes\": \"1KiB\"}"),
           TIDELOG_INVALID_INPUT);
    error_says("max_frame_bytes", (const char *[]){"max_frame_bytes", "between 64KiB", NULL});
    OK(tidelog_start_replication(db, "{\"insecure\": true, \"heartbeat_interval\": \"100ms\", "
                                     "\"idle_timeout\": \"2s\", \"max_frame_bytes\": \"1MiB\"}"));

    EXPECT(tidelog_add_peer(db, "{\"name\": \"p1\", \"tables\": [{\"table\": \"t\", \"pubish\": true}]}"),
           TIDELOG_INVALID_INPUT);
    error_says("peer table typo", (const char *[]){"tables[0]", "pubish", NULL});
    EXPECT(tidelog_add_peer(db, "{\"name\": \"p1\", \"relays\": \"yes\"}"), TIDELOG_INVALID_INPUT);
    error_says("peer relays", (const char *[]){"relays", NULL});
    OK(tidelog_add_peer(db, "{\"name\": \"p1\", \"relays\": true, \"tables\": [{\"table\": \"t\", "
                            "\"subscribe\": true}]}"));

    OK(tidelog_close(db));
    tidelog_db_free(db);
    printf("test_options: ok\n");
    return 0;
}
