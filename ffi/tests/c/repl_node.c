/* The reference scenario over mutual TLS, as two processes:
 *
 *   repl_node cloud <data dir> <cert dir> <port file> <done file>
 *   repl_node edge  <data dir> <cert dir> <port file> <done file>
 *
 * The cloud owns `thresholds` and listens; the edge dials out to it,
 * subscribes to `thresholds`, keeps `sensor_data` local, and publishes
 * `alerts` holding the offending reading plus the preceding 60 s window.
 * Both check what they receive; each exits 0 only if everything arrived. */
#include "testutil.h"

#include <pthread.h>
#include <sys/time.h>

#define WAIT_S 60.0

static uint64_t now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static void start_tls(tidelog_db *db, const char *certs, const char *node) {
    char json[4096];
    snprintf(json, sizeof json,
             "{\"tls\": {\"cert\": \"%s/%s.pem\", \"key\": \"%s/%s.key\", \"ca\": \"%s/ca.pem\"},"
             " \"heartbeat_ms\": 200, \"idle_timeout_ms\": 3000, \"backoff_initial_ms\": 100,"
             " \"backoff_max_ms\": 1000}",
             certs, node, certs, node, certs);
    OK(tidelog_start_replication(db, json));
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "r");
    if (f)
        fclose(f);
    return f != NULL;
}

static void touch(const char *path) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fclose(f);
}

/* ---- cloud ---------------------------------------------------------------- */

static tidelog_string *next_alert(tidelog_subscription *q) {
    tidelog_string *ev = NULL;
    tidelog_status st = tidelog_next_event(q, (int64_t)(WAIT_S * 1000), &ev);
    if (st != TIDELOG_OK)
        FAIL("cloud: no alert arrived: %s (%s)", tidelog_status_name(st), tu_err());
    return ev;
}

static int run_cloud(const char *dir, const char *certs, const char *port_file,
                     const char *done_file) {
    tidelog_db *db = NULL;
    tidelog_string *s = NULL, *addr = NULL, *ev = NULL;
    tidelog_subscription *q = NULL;
    uint64_t seq = 0;
    char tmp[1100];

    OK(tidelog_open(dir, "{\"node_name\": \"cloud\"}", &db));
    OK(tidelog_create_table(db, "thresholds", "{\"primary_key\": \"sensor\"}"));
    OK(tidelog_create_table(db, "alerts", NULL));
    OK(tidelog_upsert(db, "thresholds", "{\"sensor\": \"s-1\", \"max\": 50}", NULL));
    OK(tidelog_subscribe_queue(db, "alerts", &q));

    start_tls(db, certs, "cloud");
    /* The edge has no address: it dials in; one connection, both ways. */
    OK(tidelog_add_peer(db, "{\"name\": \"edge\", \"tables\": ["
                            "{\"table\": \"thresholds\", \"publish\": true},"
                            "{\"table\": \"alerts\", \"subscribe\": true}]}"));
    OK(tidelog_listen(db, "127.0.0.1:0", &addr));
    const char *port = strrchr(tidelog_string_data(addr), ':') + 1;
    snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
    FILE *f = fopen(tmp, "w");
    CHECK(f != NULL);
    fprintf(f, "%s\n", port);
    fclose(f);
    CHECK(rename(tmp, port_file) == 0);
    printf("cloud: listening on %s\n", tidelog_string_data(addr));
    tidelog_string_free(addr);

    /* Alert 1: the threshold crossing, with its window of readings. */
    ev = next_alert(q);
    CONTAINS(ev, "\"local\":false"); /* applied from the edge */
    CONTAINS(ev, "\"id\":\"a-1\"");
    tidelog_string_free(ev);
    OK(tidelog_get(db, "alerts", "\"a-1\"", &s));
    CHECK(s != NULL);
    CONTAINS(s, "\"value\":57");
    CONTAINS(s, "\"max\":50");
    CONTAINS(s, "\"window\":[");
    CONTAINS(s, "\"value\":43"); /* a reading of the preceding window */
    printf("cloud: received alert %s\n", tidelog_string_data(s));
    tidelog_string_free(s);

    /* The edge is connected, but right after its receipt for the alert it
     * changes its settings for this node twice (see the edge), and each
     * change ends the link and redials: wait for a link to be up. */
    double linked_by = tu_now_s() + WAIT_S;
    for (;;) {
        OK(tidelog_peer_status(db, "edge", &s));
        if (strstr(tidelog_string_data(s), "\"connected\":true") != NULL)
            break;
        tidelog_string_free(s);
        if (tu_now_s() > linked_by)
            FAIL("cloud: the edge never linked again");
        tu_sleep_ms(20);
    }
    printf("cloud: peer status %s\n", tidelog_string_data(s));
    tidelog_string_free(s);

    /* Change the threshold; the edge must see it and acknowledge it. */
    OK(tidelog_upsert(db, "thresholds", "{\"sensor\": \"s-1\", \"max\": 60}", &seq));
    OK(tidelog_wait_for_ack(db, "edge", seq, (uint64_t)(WAIT_S * 1000)));
    printf("cloud: edge acknowledged threshold change (seq %llu)\n", (unsigned long long)seq);

    /* Alert 2: the edge reports the new threshold it saw. */
    ev = next_alert(q);
    CONTAINS(ev, "\"id\":\"a-2\"");
    CONTAINS(ev, "\"max\":60");
    tidelog_string_free(ev);

    /* What the edge keeps local never arrives here. */
    EXPECT(tidelog_describe_table(db, "sensor_data", &s), TIDELOG_NOT_FOUND);
    OK(tidelog_peer_status(db, "edge", &s));
    CONTAINS(s, "\"refused_writes\":0");
    tidelog_string_free(s);

    /* Stay up until the edge has its receipts. */
    double deadline = tu_now_s() + WAIT_S;
    while (!file_exists(done_file)) {
        if (tu_now_s() > deadline)
            FAIL("cloud: edge never finished");
        tu_sleep_ms(20);
    }
    tidelog_subscription_free(q);
    OK(tidelog_close(db));
    tidelog_db_free(db);
    printf("cloud: ok\n");
    return 0;
}

/* ---- edge ------------------------------------------------------------------ */

typedef struct {
    pthread_mutex_t mu;
    int remote_events;
    int saw_max_60;
} edge_state;

static edge_state es = {PTHREAD_MUTEX_INITIALIZER, 0, 0};

static void on_threshold(const char *event_json, void *user_data) {
    edge_state *s = user_data;
    pthread_mutex_lock(&s->mu);
    if (strstr(event_json, "\"local\":false"))
        s->remote_events++;
    if (strstr(event_json, "\"max\":60"))
        s->saw_max_60 = 1;
    pthread_mutex_unlock(&s->mu);
}

static int read_port(const char *port_file) {
    double deadline = tu_now_s() + WAIT_S;
    for (;;) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            int port = 0;
            int n = fscanf(f, "%d", &port);
            fclose(f);
            if (n == 1 && port > 0)
                return port;
        }
        if (tu_now_s() > deadline)
            FAIL("edge: no port file from the cloud");
        tu_sleep_ms(20);
    }
}

static int run_edge(const char *dir, const char *certs, const char *port_file,
                    const char *done_file) {
    tidelog_db *db = NULL;
    tidelog_string *s = NULL, *window = NULL;
    tidelog_subscription *sub = NULL;
    tidelog_txn *t = NULL;
    uint64_t seq = 0;
    char json[16384];
    int port = read_port(port_file);

    OK(tidelog_open(dir, "{\"node_name\": \"edge\"}", &db));
    OK(tidelog_create_table(db, "sensor_data",
                            "{\"indexes\": [\"sensor\", \"ts\"], \"expiration\": 3600}"));
    OK(tidelog_create_table(db, "alerts", NULL));
    OK(tidelog_subscribe(db, "thresholds", on_threshold, &es, &sub));

    start_tls(db, certs, "edge");
    snprintf(json, sizeof json,
             "{\"name\": \"cloud\", \"address\": \"127.0.0.1:%d\", \"tables\": ["
             "{\"table\": \"thresholds\", \"subscribe\": true},"
             "{\"table\": \"alerts\", \"publish\": true}]}",
             port);
    OK(tidelog_add_peer(db, json));

    /* The threshold arrives from the cloud; the app reads it locally. */
    double deadline = tu_now_s() + WAIT_S;
    for (;;) {
        tidelog_status st = tidelog_get(db, "thresholds", "\"s-1\"", &s);
        if (st == TIDELOG_OK && s != NULL)
            break;
        if (st != TIDELOG_OK && st != TIDELOG_NOT_FOUND)
            FAIL("edge: get threshold: %s", tu_err());
        if (tu_now_s() > deadline)
            FAIL("edge: threshold never arrived");
        tu_sleep_ms(20);
    }
    CONTAINS(s, "\"max\":50");
    printf("edge: threshold arrived: %s\n", tidelog_string_data(s));
    tidelog_string_free(s);

    /* Readings every second for the last 15 s; the last one crosses. */
    uint64_t now = now_ms();
    for (int i = 0; i < 15; i++) {
        snprintf(json, sizeof json,
                 "{\"id\": %d, \"sensor\": \"s-1\", \"value\": %d, \"ts\": %llu}", i,
                 i < 14 ? 30 + i : 57, (unsigned long long)(now - (uint64_t)(14 - i) * 1000u));
        OK(tidelog_upsert(db, "sensor_data", json, NULL));
    }
    /* The alert carries the offending reading and the preceding 60 s. */
    snprintf(json, sizeof json, "{\"gte\": %llu, \"lt\": %llu}",
             (unsigned long long)(now - 60000u), (unsigned long long)now);
    OK(tidelog_find(db, "sensor_data", "ts", json, &window));
    CONTAINS(window, "\"value\":43");
    snprintf(json, sizeof json,
             "{\"id\": \"a-1\", \"sensor\": \"s-1\", \"value\": 57, \"max\": 50, \"ts\": %llu,"
             " \"window\": %s}",
             (unsigned long long)now, tidelog_string_data(window));
    tidelog_string_free(window);
    OK(tidelog_txn_begin(db, &t));
    OK(tidelog_txn_insert(t, "alerts", json));
    OK(tidelog_txn_commit(t, &seq));
    tidelog_txn_free(t);
    OK(tidelog_wait_for_ack(db, "cloud", seq, (uint64_t)(WAIT_S * 1000)));
    printf("edge: cloud acknowledged alert a-1 (seq %llu)\n", (unsigned long long)seq);
    /* The cloud is the only peer the edge publishes to: delivered. */
    OK(tidelog_wait_for_delivery(db, seq, (uint64_t)(WAIT_S * 1000)));

    /* Publishing readings the cloud does not subscribe to: a receipt for
     * one fails (TIDELOG_PEER) instead of passing, and says why. */
    snprintf(json, sizeof json,
             "{\"name\": \"cloud\", \"address\": \"127.0.0.1:%d\", \"tables\": ["
             "{\"table\": \"thresholds\", \"subscribe\": true},"
             "{\"table\": \"alerts\", \"publish\": true},"
             "{\"table\": \"sensor_data\", \"publish\": true}]}",
             port);
    OK(tidelog_update_peer(db, json));
    OK(tidelog_upsert(db, "sensor_data", "{\"id\": 99, \"sensor\": \"s-1\", \"value\": 1}", &seq));
    EXPECT(tidelog_wait_for_ack(db, "cloud", seq, (uint64_t)(WAIT_S * 1000)), TIDELOG_PEER);
    CHECK(strstr(tu_err(), "`cloud` does not subscribe to") != NULL);
    EXPECT(tidelog_wait_for_delivery(db, seq, (uint64_t)(WAIT_S * 1000)), TIDELOG_PEER);
    CHECK(strstr(tu_err(), "`cloud` does not subscribe to") != NULL);
    snprintf(json, sizeof json,
             "{\"name\": \"cloud\", \"address\": \"127.0.0.1:%d\", \"tables\": ["
             "{\"table\": \"thresholds\", \"subscribe\": true},"
             "{\"table\": \"alerts\", \"publish\": true}]}",
             port);
    OK(tidelog_update_peer(db, json));

    /* The cloud changes the threshold; the listener sees it arrive. */
    deadline = tu_now_s() + WAIT_S;
    for (;;) {
        pthread_mutex_lock(&es.mu);
        int seen = es.saw_max_60, remote = es.remote_events;
        pthread_mutex_unlock(&es.mu);
        if (seen) {
            CHECK(remote >= 2);
            break;
        }
        if (tu_now_s() > deadline)
            FAIL("edge: threshold change never arrived");
        tu_sleep_ms(20);
    }
    OK(tidelog_upsert(db, "alerts", "{\"id\": \"a-2\", \"kind\": \"threshold-seen\", \"max\": 60}",
                      &seq));
    OK(tidelog_wait_for_ack(db, "cloud", seq, (uint64_t)(WAIT_S * 1000)));
    /* Everything committed so far has reached every peer it goes to. */
    OK(tidelog_wait_for_delivery(db, UINT64_MAX, (uint64_t)(WAIT_S * 1000)));

    OK(tidelog_peer_status(db, "cloud", &s));
    CONTAINS(s, "\"connected\":true");
    printf("edge: peer status %s\n", tidelog_string_data(s));
    tidelog_string_free(s);
    OK(tidelog_replication_status(db, &s));
    CONTAINS(s, "\"name\":\"cloud\"");
    tidelog_string_free(s);

    touch(done_file);
    tidelog_subscription_free(sub);
    OK(tidelog_close(db));
    tidelog_db_free(db);
    printf("edge: ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s cloud|edge <data dir> <cert dir> <port file> <done file>\n",
                argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "cloud") == 0)
        return run_cloud(argv[2], argv[3], argv[4], argv[5]);
    if (strcmp(argv[1], "edge") == 0)
        return run_edge(argv[2], argv[3], argv[4], argv[5]);
    fprintf(stderr, "unknown role %s\n", argv[1]);
    return 2;
}
