/* Four threads write and read one database handle while a change
 * listener runs; then a clean shutdown. Usage: test_threads <scratch dir> */
#include "testutil.h"

#include <pthread.h>

#define THREADS 4
#define PER_THREAD 400

static tidelog_db *db;

typedef struct {
    pthread_mutex_t mu;
    long changes; /* records changed, summed over events */
    long events;
} listener_state;

static listener_state ls = {PTHREAD_MUTEX_INITIALIZER, 0, 0};

static void on_change(const char *event_json, void *user_data) {
    listener_state *s = user_data;
    long n = 0;
    for (const char *p = event_json; (p = strstr(p, "\"key\":")) != NULL; p += 6)
        n++;
    /* Reading back from the callback is allowed and must not deadlock. */
    tidelog_string *rec = NULL;
    if (tidelog_get(db, "readings", "0", &rec) != TIDELOG_OK)
        FAIL("get in callback: %s", tu_err());
    tidelog_string_free(rec);
    pthread_mutex_lock(&s->mu);
    s->changes += n;
    s->events++;
    pthread_mutex_unlock(&s->mu);
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    char rec[256], key[64];
    for (int i = 0; i < PER_THREAD; i++) {
        int k = id * 100000 + i;
        snprintf(rec, sizeof rec, "{\"id\": %d, \"sensor\": \"s-%d\", \"value\": %d}", k, id, i);
        if (i % 50 == 49) {
            /* Every 50th write goes through a two-table transaction. */
            tidelog_txn *t = NULL;
            char alert[128];
            snprintf(alert, sizeof alert, "{\"id\": \"t%d-%d\", \"reading\": %d}", id, i, k);
            OK(tidelog_txn_begin(db, &t));
            OK(tidelog_txn_upsert(t, "readings", rec));
            OK(tidelog_txn_insert(t, "alerts", alert));
            OK(tidelog_txn_commit(t, NULL));
            tidelog_txn_free(t);
        } else {
            OK(tidelog_upsert(db, "readings", rec, NULL));
        }
        snprintf(key, sizeof key, "%d", k);
        tidelog_string *s = NULL;
        OK(tidelog_get(db, "readings", key, &s));
        CHECK(s != NULL);
        tidelog_string_free(s);
        if (i % 100 == 0) {
            snprintf(key, sizeof key, "\"s-%d\"", id);
            OK(tidelog_find_eq(db, "readings", "sensor", key, &s));
            CONTAINS(s, "\"sensor\":\"s-");
            tidelog_string_free(s);
            /* Error paths stay per-thread. */
            EXPECT(tidelog_get(db, "nope", "1", &s), TIDELOG_NOT_FOUND);
            CHECK(strstr(tidelog_last_error(), "nope") != NULL);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <scratch dir>\n", argv[0]);
        return 2;
    }
    char dir[1024];
    tu_path(dir, sizeof dir, argv[1], "threads");
    OK(tidelog_open(dir, "{\"node_name\": \"threads\"}", &db));
    OK(tidelog_create_table(db, "readings", "{\"indexes\": [\"sensor\"]}"));
    OK(tidelog_create_table(db, "alerts", NULL));

    tidelog_subscription *sub = NULL;
    OK(tidelog_subscribe(db, "readings", on_change, &ls, &sub));

    pthread_t th[THREADS];
    double t0 = tu_now_s();
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_join(th[i], NULL) == 0);
    double dt = tu_now_s() - t0;

    uint64_t n = 0, alerts = 0;
    OK(tidelog_count(db, "readings", &n));
    OK(tidelog_count(db, "alerts", &alerts));
    CHECK(n == THREADS * PER_THREAD);
    CHECK(alerts == THREADS * (PER_THREAD / 50));

    /* Every committed change reaches the listener, in one event per commit. */
    double deadline = tu_now_s() + 20.0;
    for (;;) {
        pthread_mutex_lock(&ls.mu);
        long changes = ls.changes, events = ls.events;
        pthread_mutex_unlock(&ls.mu);
        if (changes == THREADS * PER_THREAD) {
            CHECK(events == THREADS * PER_THREAD);
            break;
        }
        if (tu_now_s() > deadline)
            FAIL("listener saw %ld of %d changes", changes, THREADS * PER_THREAD);
        tu_sleep_ms(10);
    }

    /* Clean shutdown in the documented order. */
    OK(tidelog_unsubscribe(sub));
    tidelog_subscription_free(sub);
    OK(tidelog_close(db));
    tidelog_db_free(db);
    printf("test_threads: %d threads x %d writes+reads in %.2f s, listener saw all %d changes\n",
           THREADS, PER_THREAD, dt, THREADS * PER_THREAD);
    return 0;
}
