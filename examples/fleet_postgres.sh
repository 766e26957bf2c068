#!/usr/bin/env bash
# The edge scenario with the cloud's tables in PostgreSQL (issue 19): a
# private PostgreSQL, two `tidelog serve` hubs both named `cloud` in front
# of it (each with a PostgreSQL sink for `alerts` and a source for
# `thresholds`), and three Node.js edge apps (examples/node/edge.js) that
# know both hubs. Midway hub A is killed and its edges move to hub B; a
# threshold changed by plain SQL reaches every edge; at the end it prints
# what landed in PostgreSQL and checks it against what the edges raised.
#
#   bash examples/fleet_postgres.sh
#
# It builds what it needs (cargo debug: the `tidelog` binary and the
# Node.js addon), installs PostgreSQL with apt-get if it is missing, runs
# everything on 127.0.0.1 in a temporary directory with certificates made
# now, and stops every process it started, by PID, on exit.
#
# Environment:
#   SCENARIO_QUICK=1      fewer alerts (the test suite)
#   KEEP_RUN=1            keep the run directory (data, logs, certificates)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ ${SCENARIO_QUICK:-0} == 1 ]]; then ALERTS=1; else ALERTS=3; fi
export WINDOW_SECS=10 EXPIRE_SECS=15 TICK_MS=200
EDGES=(edge-1 edge-2 edge-3)

T0=$SECONDS
say() { echo "  story  | $*"; }
step() { printf '\n== [%3ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() {
  echo "  story  | FAILED: $*" >&2
  exit 1
}

RUN="" PG_DATA="" HUB_A="" HUB_B="" EDGE_PIDS=()
stop_pid() { # pid [signal]: signal it and wait (up to 10 s, then SIGKILL)
  local pid=$1 sig=${2:-TERM} i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
pg_pid() { [[ -n $PG_DATA && -f $PG_DATA/postmaster.pid ]] && head -1 "$PG_DATA/postmaster.pid" || true; }
cleanup() {
  local rc=$? p
  for p in "${EDGE_PIDS[@]}"; do stop_pid "$p"; done
  stop_pid "$HUB_A"
  stop_pid "$HUB_B"
  # SIGINT: PostgreSQL's fast shutdown. It is not our child (runuser or
  # pg_ctl started it), so wait for its PID to go away.
  p=$(pg_pid)
  if [[ -n $p ]]; then
    kill -INT "$p" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  if [[ -n $RUN ]]; then
    if [[ $rc -ne 0 || ${KEEP_RUN:-0} == 1 ]]; then
      echo "  story  | run directory kept: $RUN (hub logs, edge logs, postgres.log)" >&2
    else
      rm -rf "$RUN"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() { # description seconds command...: poll until the command succeeds
  local what=$1 secs=$2 end
  shift 2
  end=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}
lines() { # how many lines of file $2 match $1
  local n
  n=$(grep -c -- "$1" "$2" 2>/dev/null) || true
  echo "${n:-0}"
}
at_least() { (($(lines "$1" "$2") >= $3)); }
within() { # seconds command...: whether the command succeeds within that time
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

step "Building (cargo debug: the tidelog binary and the Node.js addon) and PostgreSQL"
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
command -v node >/dev/null || die "node not found: install Node.js 20+"
cargo build --quiet -p tidelog -p tidelog-node
TIDELOG="$CARGO_TARGET_DIR/debug/tidelog"
TIDELOG_NODE_PROFILE=debug node bindings/node/scripts/build.js >/dev/null
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  say "apt-get install postgresql (not installed)"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
T0=$SECONDS

RUN="$(mktemp -d "${TMPDIR:-/tmp}/tidelog-fleet-pg.XXXXXX")"
chmod 755 "$RUN"

step "A private PostgreSQL on 127.0.0.1 ($RUN/pg)"
# PostgreSQL refuses to run as root: then it runs as the `postgres` user
# (Debian's package makes it), owning its folder.
AS=()
if [[ $(id -u) -eq 0 ]]; then AS=(runuser -u postgres --); fi
mkdir "$RUN/pg"
[[ ${#AS[@]} -eq 0 ]] || chown postgres:postgres "$RUN/pg"
PG_DATA="$RUN/pg/data"
PG_PORT=$(free_port)
(cd /tmp && "${AS[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U tidelog --auth=trust -E UTF8 --no-sync >/dev/null)
cat >>"$PG_DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$RUN/pg'
CONF
(cd /tmp && "${AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$RUN/pg/postgres.log" -w start >/dev/null)
psql_() { "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U tidelog -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
psql_ -d postgres -c "CREATE DATABASE fleet"
sql() { psql_ -d fleet -c "$1"; }
URL="host=127.0.0.1 port=$PG_PORT user=tidelog dbname=fleet"
say "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on port $PG_PORT, PID $(pg_pid); database fleet"

step "Certificates: one CA; edge-1..3; two certificates for \`cloud\`, each with its own key"
"$TIDELOG" certs --out "$RUN/pki" --ca-name "tidelog fleet CA" cloud "${EDGES[@]}" | sed 's/^/  certs  | /'
for tag in a b; do
  if [[ $tag == b ]]; then "$TIDELOG" certs --out "$RUN/pki" --add cloud | sed 's/^/  certs  | /'; fi
  mv "$RUN/pki/cloud.pem" "$RUN/pki/cloud-$tag.pem"
  mv "$RUN/pki/cloud.key" "$RUN/pki/cloud-$tag.key"
done
say "both hubs prove the name \`cloud\`; an edge treats them as one logical peer"

PORT_A=$(free_port) PORT_B=$(free_port)
hub_config() { # tag port
  cat <<TOML
node_name = "cloud"
data_dir = "cloud-$1-data"
listen = "127.0.0.1:$2"
status_interval_secs = 0
[tls]
cert = "pki/cloud-$1.pem"
key = "pki/cloud-$1.key"
ca = "pki/ca.pem"
[replication]
heartbeat_ms = 500
idle_timeout_ms = 3000
[[tables]]
name = "thresholds"
primary_key = "sensor"
[[tables]]
name = "alerts"
TOML
  for e in "${EDGES[@]}"; do
    printf '[[peers]]\nname = "%s"\ntables = [{ table = "thresholds", publish = true }, { table = "alerts", subscribe = true }]\n' "$e"
  done
  cat <<TOML
[[sinks]]
kind = "postgres"
name = "cloud"
url = "$URL"
tables = [{ name = "alerts" }]
[[sources]]
kind = "postgres"
url = "$URL"
table = "thresholds"
TOML
}
start_hub() { # tag port variable: starts the hub, its PID into the variable
  hub_config "$1" "$2" >"$RUN/cloud-$1.toml"
  "$TIDELOG" serve --config "$RUN/cloud-$1.toml" 2> >(tee -a "$RUN/cloud-$1.log" | sed -u "s/^/  hub $1  | /" >&2) &
  printf -v "$3" %s "$!"
  wait_for "hub $1 to start" 30 at_least 'tidelog: ready' "$RUN/cloud-$1.log" 1
}
status() { "$TIDELOG" status --json --config "$RUN/cloud-$1.toml"; }
# json EXPR: evaluates EXPR on the JSON read from stdin (as `j`).
json() { node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const j=JSON.parse(s);console.log($1)})"; }
serves() { status "$1" | json "j.peers.filter(p=>p.connected).map(p=>p.name).join(', ')"; }
on_hub() { [[ $(serves "$1") == "$2" ]]; } # tag "edge-1, edge-2, ...": exactly those linked
sink_caught_up() { [[ $(status "$1" | json 'j.sinks[0].backlog === 0 && j.sinks[0].resume_point === j.sinks[0].log_head') == true ]]; }
pg_tables_made() { [[ $(sql "SELECT to_regclass('alerts') IS NOT NULL AND to_regclass('thresholds') IS NOT NULL") == t ]]; }

step "Hub A and hub B: tidelog serve, each with a PostgreSQL sink (alerts) and source (thresholds)"
: >"$RUN/cloud-a.log"
: >"$RUN/cloud-b.log"
start_hub a "$PORT_A" HUB_A
# The sink's table and the source's triggers are made by the first hub, so
# the second does not race it.
wait_for "hub A's tables in PostgreSQL" 30 pg_tables_made
start_hub b "$PORT_B" HUB_B
say "hub A on 127.0.0.1:$PORT_A (PID $HUB_A), hub B on 127.0.0.1:$PORT_B (PID $HUB_B)"
# A sink's `hub` is "<node_name>#<node id>" by default; the ids are in the logs.
hub_id() { echo "cloud#$(grep -o 'as node `cloud` (id 0x[0-9a-f]*' "$RUN/cloud-$1.log" | head -1 | sed 's/.*id 0x//')"; }
HUB_A_ID=$(hub_id a) HUB_B_ID=$(hub_id b)

step "The cloud app sets the thresholds by plain SQL"
for s in s-1 s-2 s-3; do
  sql "INSERT INTO thresholds (record) VALUES ('{\"sensor\": \"$s\", \"max\": 80}')"
done
sql "SELECT record::text FROM thresholds ORDER BY key" | sed 's/^/  sql    | /'

step "Three edges (examples/node/edge.js); edge-1 and edge-2 dial hub A first, edge-3 hub B"
for e in "${EDGES[@]}"; do
  if [[ $e == edge-3 ]]; then first=$PORT_B then=$PORT_A; else first=$PORT_A then=$PORT_B; fi
  : >"$RUN/$e.log"
  EDGE_NODE=$e EDGE_DATA="$RUN/$e" EDGE_PKI="$RUN/pki" EDGE_LOG="$RUN/$e.log" \
    CLOUD_ADDR="127.0.0.1:$first" CLOUD_ADDRS="127.0.0.1:$then" node examples/node/edge.js >/dev/null &
  EDGE_PIDS+=($!)
done
for e in "${EDGES[@]}"; do
  wait_for "$e to connect" 30 at_least 'link to the cloud is UP' "$RUN/$e.log" 1
  wait_for "the thresholds on $e" 30 at_least 'max=80 now in effect' "$RUN/$e.log" 3
done
say "every edge has the three thresholds PostgreSQL holds"
for e in "${EDGES[@]}"; do
  wait_for "$ALERTS confirmed alerts from $e" 90 at_least 'cloud confirmed' "$RUN/$e.log" "$ALERTS"
done
wait_for "edge-1 and edge-2 on hub A, edge-3 on hub B" 30 on_hub b edge-3
for t in a b; do
  say "hub $t serves: $(serves $t); its sink applied $(status $t | json 'j.sinks[0].rows') rows so far"
done

step "Hub A is killed (SIGKILL); edge-1 and edge-2 move to hub B"
kill -KILL "$HUB_A"
wait "$HUB_A" 2>/dev/null || true
HUB_A=""
wait_for "every edge on hub B" 30 on_hub b "edge-1, edge-2, edge-3"
say "hub B serves: $(serves b)"
for e in "${EDGES[@]}"; do
  n=$(lines 'cloud confirmed' "$RUN/$e.log")
  wait_for "one more confirmed alert from $e" 90 at_least 'cloud confirmed' "$RUN/$e.log" $((n + 1))
done

step "The cloud app raises s-1's threshold to 95 by SQL; it reaches the edges through hub B's source"
sql "UPDATE thresholds SET record = jsonb_set(record, '{max}', '95') WHERE record->>'sensor' = 's-1'"
# Checked at the end: the PostgreSQL summary below is worth seeing either way.
missed=()
for e in "${EDGES[@]}"; do
  if within 30 at_least 'threshold s-1 max=95 now in effect' "$RUN/$e.log" 1; then
    say "$e: $(grep 'threshold s-1 max=95' "$RUN/$e.log" | head -1 | sed 's/^ *edge *| //')"
  else
    say "$e: the new threshold did NOT arrive within 30 s"
    missed+=("$e")
  fi
done

step "Stopping the edges (SIGTERM: each waits for its last receipts), then checking PostgreSQL"
for i in "${!EDGE_PIDS[@]}"; do
  rc=0
  kill -TERM "${EDGE_PIDS[$i]}"
  wait "${EDGE_PIDS[$i]}" || rc=$?
  EDGE_PIDS[i]=""
  ((rc == 0)) || die "${EDGES[$i]} exited with status $rc (alerts not confirmed?)"
done
wait_for "hub B's sink at its log head" 60 sink_caught_up b

say "alerts in PostgreSQL, per edge (the key is <edge>-<n>), against what each edge raised:"
fail=0
for e in "${EDGES[@]}"; do
  raised=$(grep -o '[0-9]* alerts raised' "$RUN/$e.log" | tail -1 | awk '{print $1}')
  in_pg=$(sql "SELECT count(*) FROM alerts WHERE key #>> '{}' LIKE '$e-%' AND NOT deleted")
  say "  $e: raised $raised, in PostgreSQL $in_pg"
  [[ $raised == "$in_pg" ]] || fail=1
done
say "the newest rows (key | stamp_time | stamp_node | sensor | value | threshold | raised offline):"
sql "SELECT key #>> '{}', stamp_time, stamp_node, record->>'sensor', record->'reading'->>'value', record->>'threshold', record->>'raised_offline' FROM alerts ORDER BY stamp_time DESC LIMIT 5" | sed 's/^/  sql    | /'
say "which hub wrote what: each hub's sink keeps its resume point in tidelog_sink_progress (sink | hub | through its log seq);"
say "hub A is $HUB_A_ID, hub B is $HUB_B_ID"
sql "SELECT sink, hub, seq FROM tidelog_sink_progress ORDER BY hub" | sed 's/^/  sql    | /'
say "hub B's sink since it started: $(status b | json '`${j.sinks[0].batches} batches, ${j.sinks[0].rows} rows`') (resent rows are no-ops: a row is only replaced by a greater stamp)"
say "thresholds in PostgreSQL: $(sql "SELECT string_agg(record::text, ' ' ORDER BY key) FROM thresholds")"
((fail == 0)) || die "PostgreSQL does not hold exactly the alerts the edges raised"
((${#missed[@]} == 0)) || die "the threshold changed by SQL did not reach ${missed[*]} (see core/tests/failover_subscribe.rs)"

stop_pid "$HUB_B"
HUB_B=""
step "Done in $((SECONDS - T0)) s: every alert of the three edges is in PostgreSQL once, across a hub's death, and a SQL change reached every edge"
