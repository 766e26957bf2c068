/* The log callback captures one real event: a node dials a hub that does
 * not list it as a peer, over mutual TLS on 127.0.0.1, and the hub's
 * refusal reaches the callback with its level and target.
 *
 *   test_log <scratch dir> <cert dir with ca, hub and stranger> */
#include "testutil.h"

#include <pthread.h>

struct captured {
    pthread_mutex_t mu;
    int refused; /* records saying the link was refused */
    int level;
    char target[64];
    char message[512];
};

static void on_log(int32_t level, const char *target, const char *message, void *user_data) {
    struct captured *c = user_data;
    pthread_mutex_lock(&c->mu);
    if (strstr(message, "refused replication link") != NULL && c->refused++ == 0) {
        c->level = level;
        snprintf(c->target, sizeof c->target, "%s", target);
        snprintf(c->message, sizeof c->message, "%s", message);
    }
    pthread_mutex_unlock(&c->mu);
}

static void start_tls(tidelog_db *db, const char *certs, const char *node) {
    char json[4096];
    snprintf(json, sizeof json,
             "{\"tls\": {\"cert\": \"%s/%s.pem\", \"key\": \"%s/%s.key\", \"ca\": \"%s/ca.pem\"},"
             " \"backoff_initial_ms\": 100, \"backoff_max_ms\": 500}",
             certs, node, certs, node, certs);
    OK(tidelog_start_replication(db, json));
}

int main(int argc, char **argv) {
    if (argc != 3)
        FAIL("usage: test_log <scratch dir> <cert dir>");
    char dir[4096], json[4096];
    struct captured cap;
    memset(&cap, 0, sizeof cap);
    pthread_mutex_init(&cap.mu, NULL);

    /* Bad levels are refused with a message naming the accepted ones. */
    EXPECT(tidelog_set_log_callback(on_log, &cap, 6), TIDELOG_INVALID_INPUT);
    CHECK(strstr(tu_err(), "trace") != NULL);
    OK(tidelog_set_log_callback(on_log, &cap, 2 /* warn */));

    tidelog_db *hub = NULL, *stranger = NULL;
    tidelog_string *addr = NULL;
    snprintf(dir, sizeof dir, "%s/log_hub", argv[1]);
    OK(tidelog_open(dir, "{\"node_name\": \"hub\"}", &hub));
    start_tls(hub, argv[2], "hub");
    OK(tidelog_listen(hub, "127.0.0.1:0", &addr));

    snprintf(dir, sizeof dir, "%s/log_stranger", argv[1]);
    OK(tidelog_open(dir, "{\"node_name\": \"stranger\"}", &stranger));
    start_tls(stranger, argv[2], "stranger");
    OK(tidelog_create_table(stranger, "t", "{\"primary_key\": \"id\"}"));
    snprintf(json, sizeof json,
             "{\"name\": \"hub\", \"address\": \"%s\", \"tables\": [{\"table\": \"t\", \"publish\": true}]}",
             tidelog_string_data(addr));
    OK(tidelog_add_peer(stranger, json));

    double deadline = tu_now_s() + 60.0;
    for (;;) {
        pthread_mutex_lock(&cap.mu);
        int got = cap.refused;
        pthread_mutex_unlock(&cap.mu);
        if (got)
            break;
        if (tu_now_s() > deadline)
            FAIL("no refused-link record reached the log callback within 60 s");
        tu_sleep_ms(20);
    }
    pthread_mutex_lock(&cap.mu);
    printf("log: level %d [%s] %s\n", cap.level, cap.target, cap.message);
    CHECK(cap.level == 2);
    CHECK(strcmp(cap.target, "tidelog::repl") == 0);
    CHECK(strstr(cap.message, "stranger") != NULL);
    pthread_mutex_unlock(&cap.mu);

    /* Removing the callback waits out calls in progress: `cap` may go. */
    OK(tidelog_set_log_callback(NULL, NULL, 0));
    OK(tidelog_close(stranger));
    OK(tidelog_close(hub));
    tidelog_db_free(stranger);
    tidelog_db_free(hub);
    tidelog_string_free(addr);
    pthread_mutex_destroy(&cap.mu);
    printf("test_log: ok\n");
    return 0;
}
