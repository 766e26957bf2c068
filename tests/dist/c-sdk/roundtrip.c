/* The C SDK used from outside the repository (tests/dist/test_c-sdk.sh):
 * a hub and an edge database in one process, a write, a read, and a
 * replication round trip over mutual TLS on 127.0.0.1.
 * Usage: roundtrip <scratch dir> <certs dir> */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tidelog.h>

#define OK(call)                                                                        \
    do {                                                                                \
        tidelog_status st_ = (call);                                                    \
        if (st_ != TIDELOG_OK) {                                                        \
            fprintf(stderr, "FAIL line %d: %s -> %s: %s\n", __LINE__, #call,            \
                    tidelog_status_name(st_), tidelog_last_error());                   \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #cond);                     \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static void start_tls(tidelog_db *db, const char *certs, const char *node) {
    char json[4096];
    snprintf(json, sizeof json,
             "{\"tls\": {\"cert\": \"%s/%s.pem\", \"key\": \"%s/%s.key\", \"ca\": \"%s/ca.pem\"},"
             " \"heartbeat_interval\": \"200ms\", \"backoff_initial\": \"100ms\","
             " \"backoff_max\": \"1s\"}",
             certs, node, certs, node, certs);
    OK(tidelog_start_replication(db, json));
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <scratch dir> <certs dir>\n", argv[0]);
        return 2;
    }
    char dir[2048];

    /* The header and the loaded library are the same release. */
    printf("header %s (%d.%d.%d), library %s, ABI %u\n", TIDELOG_VERSION,
           TIDELOG_VERSION_MAJOR, TIDELOG_VERSION_MINOR, TIDELOG_VERSION_PATCH,
           tidelog_version(), tidelog_abi_version());
    CHECK(strcmp(TIDELOG_VERSION, tidelog_version()) == 0);
    CHECK(tidelog_abi_version() == TIDELOG_ABI_VERSION);

    /* Local: open, create a table, upsert, get. */
    tidelog_db *hub = NULL, *edge = NULL;
    snprintf(dir, sizeof dir, "%s/hub", argv[1]);
    OK(tidelog_open(dir, "{\"node_name\": \"hub\"}", &hub));
    bool created = false;
    OK(tidelog_ensure_table(hub, "alerts", "{\"indexes\": [\"sensor\"]}", &created));
    CHECK(created);
    OK(tidelog_upsert(hub, "alerts", "{\"id\": 1, \"sensor\": \"s-1\", \"value\": 21.5}", NULL));
    tidelog_string *rec = NULL;
    OK(tidelog_get(hub, "alerts", "1", &rec));
    CHECK(rec != NULL && strstr(tidelog_string_data(rec), "\"value\":21.5") != NULL);
    printf("local read: %s\n", tidelog_string_data(rec));
    tidelog_string_free(rec);

    /* Replication: the hub listens, the edge dials it and publishes. */
    start_tls(hub, argv[2], "hub");
    OK(tidelog_add_peer(hub, "{\"name\": \"edge\", \"tables\": "
                             "[{\"table\": \"alerts\", \"subscribe\": true}]}"));
    tidelog_string *addr = NULL;
    OK(tidelog_listen(hub, "127.0.0.1:0", &addr));
    printf("hub listening on %s (mutual TLS)\n", tidelog_string_data(addr));

    snprintf(dir, sizeof dir, "%s/edge", argv[1]);
    OK(tidelog_open(dir, "{\"node_name\": \"edge\"}", &edge));
    OK(tidelog_ensure_table(edge, "alerts", NULL, NULL));
    start_tls(edge, argv[2], "edge");
    char peer[1024];
    snprintf(peer, sizeof peer,
             "{\"name\": \"hub\", \"address\": \"%s\", \"tables\": "
             "[{\"table\": \"alerts\", \"publish\": true}]}",
             tidelog_string_data(addr));
    tidelog_string_free(addr);
    OK(tidelog_add_peer(edge, peer));
    uint64_t seq = 0;
    OK(tidelog_upsert(edge, "alerts", "{\"id\": \"e-1\", \"sensor\": \"s-9\", \"value\": 99}",
                      &seq));
    OK(tidelog_wait_for_ack(edge, "hub", seq, 30000));
    OK(tidelog_get(hub, "alerts", "\"e-1\"", &rec));
    CHECK(rec != NULL && strstr(tidelog_string_data(rec), "\"sensor\":\"s-9\"") != NULL);
    printf("replicated to the hub: %s\n", tidelog_string_data(rec));
    tidelog_string_free(rec);

    OK(tidelog_close(edge));
    tidelog_db_free(edge);
    OK(tidelog_close(hub));
    tidelog_db_free(hub);
    printf("roundtrip: ok\n");
    return 0;
}
