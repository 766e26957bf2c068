#!/usr/bin/env bash
# The reference scenario (SPEC §1), for real, on this machine: a cloud
# (`tidelog serve`), an edge gateway app and an operator console, each its
# own process, talking mutual TLS on 127.0.0.1 with certificates made now.
#
#   bash examples/edge_scenario.sh
#
# It builds what it needs (cargo, debug profile: the `tidelog` binary and the
# Node.js addon), tells the story step by step, and ends with a check of the
# cloud's and the edge's data. Exit status 0 only if every check holds.
#
# Environment:
#   EDGE_LANG=node        the edge app to run: node (examples/node/edge.js) or
#                         python (examples/python/edge.py) or c (examples/c/edge.c)
#   SCENARIO_QUICK=1      fewer alerts and a shorter outage (the test suite)
#   KEEP_RUN=1            keep the run directory (data, logs, certificates)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
EDGE_LANG="${EDGE_LANG:-node}"
QUICK="${SCENARIO_QUICK:-0}"
if [[ $QUICK == 1 ]]; then
  ALERTS_BEFORE=1 ALERTS_OFFLINE=2 OUTAGE_MIN_SECS=2
else
  ALERTS_BEFORE=3 ALERTS_OFFLINE=3 OUTAGE_MIN_SECS=6
fi
# A short window and expiry so that you see readings expire within the
# story; an installation would use e.g. a 60 s window and hours of expiry.
export WINDOW_SECS="${WINDOW_SECS:-10}" EXPIRE_SECS="${EXPIRE_SECS:-15}" TICK_MS="${TICK_MS:-200}"

T0=$SECONDS
say() { echo "  story  | $*"; }
step() { printf '\n== [%3ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() {
  echo "  story  | FAILED: $*" >&2
  exit 1
}

CLOUD_PID="" EDGE_PID="" RUN=""
stop_pid() { # pid signal: signal it and wait (up to 10 s, then SIGKILL)
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
cleanup() {
  local rc=$?
  stop_pid "$EDGE_PID"
  stop_pid "$CLOUD_PID"
  if [[ -n $RUN ]]; then
    if [[ $rc -ne 0 || ${KEEP_RUN:-0} == 1 ]]; then
      echo "  story  | run directory kept: $RUN (data, certificates, cloud.log, edge.log)" >&2
    else
      rm -rf "$RUN"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for DESCRIPTION SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
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
edge_alive() { kill -0 "$EDGE_PID" 2>/dev/null || die "the edge app exited early (see above)"; }

step "Building what the story needs (cargo debug build of the tidelog binary and the Node.js addon)"
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
command -v node >/dev/null || die "node not found: install Node.js 20+"
# One cargo run for the binary and the addon: their shared dependencies
# build once, in parallel. The first build takes a few minutes on 2 cores.
say "cargo build -p tidelog -p tidelog-node   (the tidelog binary and the Node.js addon; a first build takes minutes)"
cargo build --quiet -p tidelog -p tidelog-node
TIDELOG="$CARGO_TARGET_DIR/debug/tidelog"
# The operator console and the final check are Node.js programs: the addon
# is built whatever the edge's language.
TIDELOG_NODE_PROFILE=debug node bindings/node/scripts/build.js >/dev/null # copies it next to index.js
case "$EDGE_LANG" in
  node) EDGE_CMD=(node examples/node/edge.js) ;;
  python)
    say "python3 -m venv .venv; pip install maturin; maturin develop   (the pyo3 module, debug)"
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check maturin==1.16.0
    .venv/bin/maturin develop --quiet -m bindings/python/Cargo.toml >/dev/null
    EDGE_CMD=(.venv/bin/python examples/python/edge.py)
    ;;
  c)
    say "cargo build -p tidelog-ffi; gcc examples/c/edge.c   (libtidelog.so and the C app)"
    cargo build --quiet -p tidelog-ffi
    gcc -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude examples/c/edge.c \
      -L"$CARGO_TARGET_DIR/debug" -ltidelog -Wl,-rpath,"$CARGO_TARGET_DIR/debug" -o "$CARGO_TARGET_DIR/edge-c"
    EDGE_CMD=("$CARGO_TARGET_DIR/edge-c")
    ;;
  *) die "EDGE_LANG=$EDGE_LANG: choose node, python or c" ;;
esac
say "built in $((SECONDS - T0)) s"
BUILD_SECS=$((SECONDS - T0))
T0=$SECONDS # the story's clock starts now

RUN="$(mktemp -d "${TMPDIR:-/tmp}/tidelog-scenario.XXXXXX")"
PORT="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
CLOUD_ADDR="127.0.0.1:$PORT"
export CLOUD_ADDR OPERATOR_DATA="$RUN/operator" OPERATOR_PKI="$RUN/pki"
export EDGE_DATA="$RUN/edge" EDGE_PKI="$RUN/pki" EDGE_LOG="$RUN/edge.log"
: >"$EDGE_LOG"

step "Certificates: a development CA and one certificate per node (tidelog certs)"
"$TIDELOG" certs --out "$RUN/pki" --ca-name "tidelog scenario CA" cloud edge-1 operator | sed 's/^/  certs  | /'
say "each node proves its name with its certificate; each trusts only this CA"

step "The cloud: tidelog serve, with a config written now ($RUN/cloud.toml)"
cat >"$RUN/cloud.toml" <<TOML
node_name = "cloud"
data_dir = "cloud-data"
listen = "$CLOUD_ADDR"
status_interval_secs = 15

[tls]
cert = "pki/cloud.pem"
key = "pki/cloud.key"
ca = "pki/ca.pem"

[replication]
heartbeat_ms = 500
idle_timeout_ms = 3000

[retention]
# Keep the transaction log a day, so the final check can audit the order
# in which the alerts were applied.
log_min_age_secs = 86400

[[tables]]
name = "thresholds"
primary_key = "sensor"

[[tables]]
name = "alerts"
indexes = ["sensor"]

# The gateway dials in (it is behind a firewall): no address here.
[[peers]]
name = "edge-1"
tables = [
  { table = "thresholds", publish = true },
  { table = "alerts", subscribe = true },
]

# The operator console dials in too and sends threshold changes.
[[peers]]
name = "operator"
tables = [{ table = "thresholds", subscribe = true }]
TOML
say "tables: thresholds (published to edge-1, accepted from operator), alerts (accepted from edge-1)"
say "no sensor_data table: raw readings are none of the cloud's business"
start_cloud() {
  local readies
  readies=$(lines 'tidelog: ready' "$RUN/cloud.log")
  "$TIDELOG" serve --config "$RUN/cloud.toml" 2> >(tee -a "$RUN/cloud.log" | sed -u 's/^/  cloud  | /' >&2) &
  CLOUD_PID=$!
  wait_for "the cloud to start" 30 at_least 'tidelog: ready' "$RUN/cloud.log" $((readies + 1))
}
start_cloud

step "The operator sets the alert thresholds on the cloud"
say "tidelog serve has no write API: the operator console is one more tidelog node that dials the"
say "cloud and publishes its thresholds table; the cloud relays them to every gateway"
node examples/node/operator.js s-1=80 s-2=80 s-3=80

step "The edge app starts ($EDGE_LANG): it dials out to the cloud; nothing dials in"
say "sensors s-1..s-3 write a reading every ${TICK_MS} ms into the local sensor_data table"
say "(expiring after ${EXPIRE_SECS} s, replicated to no one); a reading above its threshold raises an"
say "alert carrying the preceding ${WINDOW_SECS} s of that sensor's readings"
EDGE_NODE=edge-1 "${EDGE_CMD[@]}" &
EDGE_PID=$!
wait_for "the edge to connect" 30 at_least 'link to the cloud is UP' "$EDGE_LOG" 1
wait_for "the thresholds to reach the edge" 30 at_least 'now in effect' "$EDGE_LOG" 3
say "the thresholds arrived; the app reads them with local calls on every reading"

step "Normal operation: alerts go up, the cloud confirms each one"
wait_for "$ALERTS_BEFORE confirmed alerts" 60 at_least 'cloud confirmed' "$EDGE_LOG" "$ALERTS_BEFORE"
edge_alive

step "OUTAGE: the cloud process is killed (SIGKILL, no goodbye)"
kill -KILL "$CLOUD_PID"
wait "$CLOUD_PID" 2>/dev/null || true
CLOUD_PID=""
OUTAGE_START=$SECONDS
say "the edge keeps collecting readings and raising alerts; tidelog queues them in its log"
wait_for "the edge to notice the outage" 30 at_least 'link to the cloud is DOWN' "$EDGE_LOG" 1
wait_for "$ALERTS_OFFLINE alerts raised during the outage" 90 at_least 'cloud unreachable, queued' "$EDGE_LOG" "$ALERTS_OFFLINE"
while ((SECONDS - OUTAGE_START < OUTAGE_MIN_SECS)); do sleep 0.2; done
edge_alive

step "The cloud returns (same data directory); the edge redials and its queue drains"
RAISED=$(lines 'ALERT ' "$EDGE_LOG")
start_cloud
wait_for "the edge to reconnect" 30 at_least 'link to the cloud is UP' "$EDGE_LOG" 2
wait_for "the cloud to confirm the $RAISED alerts raised so far" 60 at_least 'cloud confirmed' "$EDGE_LOG" "$RAISED"
say "every queued alert is confirmed (receipts above); the final check audits their order on the cloud"

step "The operator changes a threshold on the cloud: s-1 max 80 -> 95"
node examples/node/operator.js s-1=95
wait_for "the new threshold on the edge" 30 at_least 'threshold s-1 max=95 now in effect' "$EDGE_LOG" 1
say "the change reached the edge through the cloud over the edge's own connection"
sleep 2
edge_alive

step "Shutting down: the edge (SIGTERM: waits for its last receipts), then the cloud (SIGTERM)"
kill -TERM "$EDGE_PID"
EDGE_RC=0
wait "$EDGE_PID" || EDGE_RC=$?
EDGE_PID=""
((EDGE_RC == 0)) || die "the edge app exited with status $EDGE_RC"
kill -TERM "$CLOUD_PID"
CLOUD_RC=0
wait "$CLOUD_PID" || CLOUD_RC=$?
CLOUD_PID=""
((CLOUD_RC == 0)) || die "tidelog serve exited with status $CLOUD_RC"

step "Final check: open the cloud's and the edge's data directories and compare"
node examples/node/check.js "$RUN/cloud-data" "$EDGE_DATA" --min-offline "$ALERTS_OFFLINE" --expire-secs "$EXPIRE_SECS" --expect s-1=95
step "Done: the story took $((SECONDS - T0)) s (after $BUILD_SECS s of building); the cloud holds every alert exactly once, in order, and no sensor readings"
