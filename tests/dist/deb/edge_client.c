/* A gateway app for tests/dist/test_deb.sh, built from the C SDK tarball:
 * the .deb's `tidelog` has no command that writes or reads records.
 *   edge_client write <data dir> <certs dir> <node> <hub address> <alert id>
 *       dials the hub as <node>, publishes table `alerts`, writes one
 *       alert and waits until the hub has acknowledged it;
 *   edge_client read <data dir> <node> <alert id>
 *       opens a (stopped) instance's data directory and prints the alert. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tidelog.h>

#define OK(call)                                                                        \
    do {                                                                                \
        tidelog_status st_ = (call);                                                    \
        if (st_ != TIDELOG_OK) {                                                        \
            fprintf(stderr, "edge_client: line %d: %s -> %s: %s\n", __LINE__, #call,    \
                    tidelog_status_name(st_), tidelog_last_error());                   \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static int write_alert(char **argv) {
    const char *dir = argv[2], *certs = argv[3], *node = argv[4], *hub = argv[5], *id = argv[6];
    char json[4096];
    tidelog_db *db = NULL;
    snprintf(json, sizeof json, "{\"node_name\": \"%s\"}", node);
    OK(tidelog_open(dir, json, &db));
    OK(tidelog_ensure_table(db, "alerts", "{\"indexes\": [\"sensor\"]}", NULL));
    snprintf(json, sizeof json,
             "{\"tls\": {\"cert\": \"%s/%s.pem\", \"key\": \"%s/%s.key\", \"ca\": \"%s/ca.pem\"},"
             " \"backoff_initial\": \"100ms\", \"backoff_max\": \"1s\"}",
             certs, node, certs, node, certs);
    OK(tidelog_start_replication(db, json));
    snprintf(json, sizeof json,
             "{\"name\": \"cloud\", \"address\": \"%s\", \"tables\": "
             "[{\"table\": \"alerts\", \"publish\": true}]}",
             hub);
    OK(tidelog_add_peer(db, json));
    uint64_t seq = 0;
    snprintf(json, sizeof json, "{\"id\": \"%s\", \"sensor\": \"s-7\", \"value\": 57}", id);
    OK(tidelog_upsert(db, "alerts", json, &seq));
    OK(tidelog_wait_for_ack(db, "cloud", seq, 30000));
    printf("edge_client: %s wrote alert %s (seq %llu), the hub acknowledged it\n", node, id,
           (unsigned long long)seq);
    OK(tidelog_close(db));
    tidelog_db_free(db);
    return 0;
}

static int read_alert(char **argv) {
    char json[1024];
    tidelog_db *db = NULL;
    snprintf(json, sizeof json, "{\"node_name\": \"%s\"}", argv[3]);
    OK(tidelog_open(argv[2], json, &db));
    snprintf(json, sizeof json, "\"%s\"", argv[4]);
    tidelog_string *rec = NULL;
    OK(tidelog_get(db, "alerts", json, &rec));
    if (rec == NULL) {
        fprintf(stderr, "edge_client: alert %s is not in %s\n", argv[4], argv[2]);
        return 1;
    }
    printf("%s\n", tidelog_string_data(rec));
    tidelog_string_free(rec);
    OK(tidelog_close(db));
    tidelog_db_free(db);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 7 && strcmp(argv[1], "write") == 0)
        return write_alert(argv);
    if (argc == 5 && strcmp(argv[1], "read") == 0)
        return read_alert(argv);
    fprintf(stderr,
            "usage: %s write <dir> <certs> <node> <hub address> <id> | read <dir> <node> <id>\n",
            argv[0]);
    return 2;
}
