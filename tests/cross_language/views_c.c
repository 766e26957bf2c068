/* The C side of same_views.py: opens the directory it is given and prints
 * what the C ABI hands out (see same_views.py for the protocol). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidelog.h"

static void check(tidelog_status s, const char *what) {
    if (s != TIDELOG_OK) {
        fprintf(stderr, "%s: %s: %s\n", what, tidelog_status_name((int32_t)s), tidelog_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: views_c write|read DIR TABLE\n");
        return 2;
    }
    const char *mode = argv[1], *dir = argv[2], *table = argv[3];
    tidelog_db *db = NULL;
    tidelog_string *info = NULL, *commit = NULL, *event = NULL, *log = NULL;
    tidelog_subscription *sub = NULL;
    check(tidelog_open(dir, "{\"node_name\": \"cloud\"}", &db), "open");
    check(tidelog_node_info(db, &info), "node info");
    if (strcmp(mode, "write") == 0) {
        tidelog_txn *t = NULL;
        check(tidelog_subscribe_queue(db, table, &sub), "subscribe");
        check(tidelog_txn_begin(db, &t), "begin");
        check(tidelog_txn_upsert(t, table,
                                 "{\"id\": \"c-1\", \"lang\": \"c\", \"n\": 1.5, \"tags\": [\"x\", \"\xc3\xa9\"], "
                                 "\"nested\": {\"a\": null}}"),
              "upsert");
        check(tidelog_txn_upsert(t, table, "{\"id\": \"c-tmp\"}"), "upsert");
        check(tidelog_txn_delete(t, table, "\"c-tmp\""), "delete");
        check(tidelog_txn_commit_json(t, &commit), "commit");
        tidelog_txn_free(t);
        check(tidelog_next_event(sub, 10000, &event), "next event");
    }
    check(tidelog_read_log(db, 1, 1000, &log), "read log");
    printf("{\"info\": %s", tidelog_string_data(info));
    if (commit)
        printf(", \"commit\": %s, \"event\": %s", tidelog_string_data(commit), tidelog_string_data(event));
    printf(", \"log\": %s}\n", tidelog_string_data(log));
    tidelog_string_free(info);
    tidelog_string_free(commit);
    tidelog_string_free(event);
    tidelog_string_free(log);
    tidelog_subscription_free(sub);
    check(tidelog_close(db), "close");
    tidelog_db_free(db);
    return 0;
}
