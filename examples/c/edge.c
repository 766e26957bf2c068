/*
 * The edge application of the reference scenario (SPEC §1), in C.
 *
 * The same job as examples/node/edge.js: simulated sensors write every
 * reading into a local `sensor_data` table (never replicated, expiring on
 * its own), the alert thresholds come from the cloud's `thresholds` table
 * (read with local calls only), and a reading above its threshold raises an
 * alert holding the reading plus the preceding window of that sensor's
 * readings, taken from `sensor_data`. tidelog publishes `alerts` to the
 * cloud over the one connection the edge dials out; the app never touches
 * the network itself. After every tick it collects, in alert order, the
 * cloud's receipts (tidelog_wait_for_ack with a zero timeout).
 *
 *   EDGE_LANG=c bash examples/edge_scenario.sh
 *
 * Built by the scenario script:
 *   cargo build -p tidelog-ffi
 *   gcc -std=c11 -Wall -Wextra -Werror -Iinclude examples/c/edge.c \
 *       -Ltarget/debug -ltidelog -Wl,-rpath,$PWD/target/debug -o edge
 *
 * Settings come from the environment, as for edge.js: EDGE_DATA, EDGE_PKI,
 * CLOUD_ADDR, EDGE_LOG, WINDOW_SECS, EXPIRE_SECS, TICK_MS. SIGTERM/SIGINT
 * stop the sensors, wait (up to 15 s) for the last receipts, close, exit.
 *
 * JSON goes in and out of tidelog as text; this program writes it with
 * snprintf and reads the few numbers it needs with a tiny scanner, which is
 * enough for the flat records it stores (use a JSON library in real code).
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tidelog.h>

#define NSENSORS 3
#define MAX_PENDING 4096
static const char *SENSORS[NSENSORS] = {"s-1", "s-2", "s-3"};

static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

static const char *log_path;

static void say(const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("  edge   | %s\n", msg);
    fflush(stdout);
    if (log_path) {
        FILE *f = fopen(log_path, "a");
        if (f) {
            fprintf(f, "  edge   | %s\n", msg);
            fclose(f);
        }
    }
}

static void check(tidelog_status st, const char *what) {
    if (st != TIDELOG_OK) {
        fprintf(stderr, "edge: %s: %s (%s)\n", what, tidelog_last_error(), tidelog_status_name(st));
        exit(1);
    }
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short: fine */
}

/* The number after "key": in a flat JSON object, from `from` up to `end`. */
static bool json_num(const char *from, const char *end, const char *key, double *out) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(from, pat);
    if (!p || (end && p >= end)) return false;
    p += strlen(pat);
    while (*p == ' ') p++;
    char *stop;
    *out = strtod(p, &stop);
    return stop != p;
}

/* A growing text buffer. */
typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) abort();
        if (b->data && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->data = realloc(b->data, b->cap);
        if (!b->data) abort();
        b->data[b->len] = '\0';
    }
}

/* Deterministic simulated sensors: a noisy baseline near 50 with a spike to
 * 90..99 every few seconds on one sensor or another. */
static uint64_t seed = 7;
static double rnd(void) {
    seed = (seed * 1103515245u + 12345u) % 2147483648u;
    return (double)seed / 2147483648.0;
}
static int spike_left[NSENSORS];
static int tick_ms = 200;
static double reading_value(int s) {
    if (spike_left[s] == 0 && rnd() < tick_ms / 1000.0 / 8) spike_left[s] = 3;
    if (spike_left[s] > 0) {
        spike_left[s]--;
        return (double)(long)((90 + rnd() * 9) * 10 + 0.5) / 10;
    }
    return (double)(long)((45 + rnd() * 10) * 10 + 0.5) / 10;
}

/* Alerts waiting for the cloud's receipt, oldest first. */
static struct {
    char id[32];
    uint64_t seq;
    int64_t raised_ms;
} pending[MAX_PENDING];
static size_t pending_head, pending_len;

static tidelog_db *db;

/* Collects receipts in alert order; waits at most `timeout_ms` for each. */
static void collect_receipts(uint64_t timeout_ms) {
    while (pending_len > 0) {
        size_t i = pending_head;
        tidelog_status st = tidelog_wait_for_ack(db, "cloud", pending[i].seq, timeout_ms);
        if (st == TIDELOG_TIMEOUT) return;
        check(st, "wait_for_ack");
        int64_t t = now_ms();
        char rec[160];
        snprintf(rec, sizeof rec, "{\"id\":\"%s\",\"acked_ms\":%lld,\"waited_ms\":%lld}", pending[i].id,
                 (long long)t, (long long)(t - pending[i].raised_ms));
        check(tidelog_upsert(db, "receipts", rec, NULL), "upsert receipt");
        say("cloud confirmed %s, %.1f s after it was raised", pending[i].id, (t - pending[i].raised_ms) / 1000.0);
        pending_head = (pending_head + 1) % MAX_PENDING;
        pending_len--;
    }
}

static uint64_t count(const char *table) {
    uint64_t n = 0;
    check(tidelog_count(db, table, &n), "count");
    return n;
}

int main(void) {
    const char *node = env_or("EDGE_NODE", "edge-1");
    const char *data = env_or("EDGE_DATA", "examples/.edge-data");
    const char *pki = env_or("EDGE_PKI", "examples/pki");
    const char *cloud = env_or("CLOUD_ADDR", "127.0.0.1:7000");
    log_path = getenv("EDGE_LOG");
    int64_t window_ms = (int64_t)(atof(env_or("WINDOW_SECS", "60")) * 1000);
    long expire_secs = atol(env_or("EXPIRE_SECS", "120"));
    tick_ms = atoi(env_or("TICK_MS", "200"));

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char json[1024];
    snprintf(json, sizeof json, "{\"node_name\":\"%s\"}", node);
    check(tidelog_open(data, json, &db), "open");
    /* Readings keyed "<sensor>/<ms, 15 digits>": the window before an alert
     * is one primary-key range scan. No peer flow names this table. */
    snprintf(json, sizeof json, "{\"expiration\":%ld}", expire_secs);
    check(tidelog_ensure_table(db, "sensor_data", json, NULL), "ensure sensor_data");
    check(tidelog_ensure_table(db, "alerts", "{\"indexes\":[\"sensor\"]}", NULL), "ensure alerts");
    check(tidelog_ensure_table(db, "receipts", NULL, NULL), "ensure receipts"); /* local only */
    check(tidelog_ensure_table(db, "thresholds", "{\"primary_key\":\"sensor\"}", NULL), "ensure thresholds");

    snprintf(json, sizeof json,
             "{\"tls\":{\"cert\":\"%s/%s.pem\",\"key\":\"%s/%s.key\",\"ca\":\"%s/ca.pem\"},"
             "\"heartbeat_ms\":500,\"idle_timeout_ms\":3000,\"backoff_initial_ms\":100,\"backoff_max_ms\":1000}",
             pki, node, pki, node, pki);
    check(tidelog_start_replication(db, json), "start_replication");
    /* The edge dials out; nothing dials in (no tidelog_listen). */
    snprintf(json, sizeof json,
             "{\"name\":\"cloud\",\"address\":\"%s\",\"tables\":[{\"table\":\"thresholds\",\"subscribe\":true},"
             "{\"table\":\"alerts\",\"publish\":true}]}",
             cloud);
    check(tidelog_add_peer(db, json), "add_peer");
    tidelog_string *info = NULL;
    check(tidelog_node_info(db, &info), "node_info");
    const char *hex = strstr(tidelog_string_data(info), "\"node_id_hex\":\"");
    say("opened %s as %s (node id %.16s); dialing the cloud at %s", data, node, hex ? hex + 15 : "?", cloud);
    tidelog_string_free(info);

    double in_effect[NSENSORS] = {-1, -1, -1};
    bool above[NSENSORS] = {false};
    int link_up = -1; /* unknown */
    uint64_t readings = 0, alert_no = count("alerts");
    int64_t next_tick = now_ms(), next_report = now_ms() + 5000;

    while (!stop_signal) {
        tidelog_string *st = NULL;
        check(tidelog_peer_status(db, "cloud", &st), "peer_status");
        int connected = strstr(tidelog_string_data(st), "\"connected\":true") != NULL;
        if (connected != link_up) {
            if (connected)
                say("link to the cloud is UP");
            else if (link_up < 0)
                say("not connected to the cloud yet");
            else
                say("link to the cloud is DOWN; collecting and queueing locally");
            link_up = connected;
        }
        tidelog_string_free(st);

        int64_t now = now_ms();
        for (int s = 0; s < NSENSORS; s++) {
            double value = reading_value(s);
            char id[48], rec[256];
            snprintf(id, sizeof id, "%s/%015lld", SENSORS[s], (long long)now);
            snprintf(rec, sizeof rec, "{\"id\":\"%s\",\"sensor\":\"%s\",\"ts\":%lld,\"value\":%.1f}", id, SENSORS[s],
                     (long long)now, value);
            check(tidelog_upsert(db, "sensor_data", rec, NULL), "upsert reading");
            readings++;

            /* A local read, on every reading. */
            char key[16];
            snprintf(key, sizeof key, "\"%s\"", SENSORS[s]);
            tidelog_string *th = NULL;
            check(tidelog_get(db, "thresholds", key, &th), "get threshold");
            if (!th) continue; /* no threshold from the cloud yet */
            double max = 0, updated = 0;
            json_num(tidelog_string_data(th), NULL, "max", &max);
            json_num(tidelog_string_data(th), NULL, "__updatedtime__", &updated);
            tidelog_string_free(th);
            if (max != in_effect[s]) {
                in_effect[s] = max;
                time_t secs = (time_t)(updated / 1000);
                char when[32];
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", gmtime(&secs));
                say("threshold %s max=%g now in effect (from the cloud, changed %s.%03dZ)", SENSORS[s], max, when,
                    (int)((int64_t)updated % 1000));
            }
            bool crossing = value > max;
            if (crossing && !above[s]) {
                /* The preceding window of this sensor's readings. */
                char range[160];
                snprintf(range, sizeof range, "{\"gte\":\"%s/%015lld\",\"lt\":\"%s\"}", SENSORS[s],
                         (long long)(now - window_ms), id);
                tidelog_string *rows = NULL;
                check(tidelog_scan(db, "sensor_data", range, &rows), "scan window");
                buf_t win = {0};
                buf_add(&win, "[");
                size_t n = 0;
                for (const char *p = strchr(tidelog_string_data(rows), '{'); p; p = strchr(p + 1, '{')) {
                    const char *e = strchr(p, '}');
                    double ts, v;
                    if (json_num(p, e, "ts", &ts) && json_num(p, e, "value", &v))
                        buf_add(&win, "%s{\"ts\":%lld,\"value\":%.1f}", n++ ? "," : "", (long long)ts, v);
                }
                buf_add(&win, "]");
                tidelog_string_free(rows);

                alert_no++;
                char alert_id[32];
                snprintf(alert_id, sizeof alert_id, "%s-%05llu", node, (unsigned long long)alert_no);
                bool offline = link_up != 1;
                buf_t a = {0};
                buf_add(&a,
                        "{\"id\":\"%s\",\"n\":%llu,\"sensor\":\"%s\",\"reading\":{\"ts\":%lld,\"value\":%.1f},"
                        "\"threshold\":%g,\"window_secs\":%lld,\"window\":%s,\"raised_offline\":%s}",
                        alert_id, (unsigned long long)alert_no, SENSORS[s], (long long)now, value, max,
                        (long long)(window_ms / 1000), win.data, offline ? "true" : "false");
                uint64_t seq = 0;
                check(tidelog_insert(db, "alerts", a.data, &seq), "insert alert");
                free(a.data);
                free(win.data);
                say("ALERT %s: %s=%g > %g, with %zu readings of the preceding %lld s (log seq %llu)%s", alert_id,
                    SENSORS[s], value, max, n, (long long)(window_ms / 1000), (unsigned long long)seq,
                    offline ? " -- cloud unreachable, queued" : "");
                if (pending_len == MAX_PENDING) {
                    fprintf(stderr, "edge: too many alerts awaiting the cloud\n");
                    return 1;
                }
                size_t slot = (pending_head + pending_len) % MAX_PENDING;
                snprintf(pending[slot].id, sizeof pending[slot].id, "%s", alert_id);
                pending[slot].seq = seq;
                pending[slot].raised_ms = now;
                pending_len++;
            }
            above[s] = crossing;
        }
        collect_receipts(0);

        if (now_ms() >= next_report) {
            next_report += 5000;
            tidelog_string *first = NULL;
            check(tidelog_scan(db, "sensor_data", "{\"gte\":\"s-1/\",\"limit\":1}", &first), "scan");
            double ts = 0;
            char age[64] = "";
            if (json_num(tidelog_string_data(first), NULL, "ts", &ts))
                snprintf(age, sizeof age, " oldest s-1 reading %.0f s old;", (now_ms() - ts) / 1000);
            tidelog_string_free(first);
            say("%llu readings so far; sensor_data holds %llu (local only, expiring after %ld s);%s %llu alerts, %zu "
                "awaiting the cloud",
                (unsigned long long)readings, (unsigned long long)count("sensor_data"), expire_secs, age,
                (unsigned long long)count("alerts"), pending_len);
        }
        next_tick += tick_ms;
        sleep_ms(next_tick - now_ms());
    }

    say("%s: sensors stopped; waiting for the cloud to confirm %zu queued alert(s)",
        stop_signal == SIGINT ? "SIGINT" : "SIGTERM", pending_len);
    int64_t give_up = now_ms() + 15000;
    while (pending_len > 0 && now_ms() < give_up) collect_receipts(200);
    uint64_t raised = count("alerts"), confirmed = count("receipts");
    say("%llu alerts raised, %llu confirmed by the cloud%s", (unsigned long long)raised, (unsigned long long)confirmed,
        pending_len ? " (gave up waiting)" : "");
    check(tidelog_close(db), "close");
    tidelog_db_free(db);
    return raised == confirmed ? 0 : 3;
}
