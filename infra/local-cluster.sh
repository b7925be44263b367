#!/usr/bin/env bash
# A real multi-node Ray cluster on this machine, bound to 127.0.0.1: a head and one worker node.
#   infra/local-cluster.sh up     start both nodes, record every process they started
#   infra/local-cluster.sh down   stop exactly those processes (by PID), nothing else
#   infra/local-cluster.sh status
# Every ray call gets the same RAY_AUTH_MODE; each node gets a small object store, or two nodes
# would reserve a large share of the machine's memory.
set -euo pipefail

RAY=${RAY:-.venv/bin/ray}
PYTHON=${PYTHON:-$(dirname "$RAY")/python}
# Everything on 127.0.0.1: Ray's single-host mode for every ray call and process of this cluster
# (without it Ray resolves 127.0.0.1 to the machine's outward address and listens there); the
# worker node joins through infra/ray_local_node.py, as `ray start` refuses to in that mode.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
PORT=${RAY_PORT:-6380}
DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
# Each node's dashboard agent (the head's runs the Jobs API) listens on a port of its own: Ray's
# default, 52365 for every node, collides with the worker node and with any other Ray on the host.
AGENT_PORT=${RAY_AGENT_PORT:-52365}
WORKER_AGENT_PORT=${RAY_WORKER_AGENT_PORT:-$((AGENT_PORT + 1))}
OBJECT_STORE=${RAY_OBJECT_STORE:-1000000000}
CPUS_PER_NODE=${RAY_CPUS_PER_NODE:-1}
# Ray's token authentication stays on: every request to the cluster (GCS, dashboard, Jobs API)
# carries the token; `up` writes a fresh one (0600) unless RAY_AUTH_TOKEN(_PATH) gives one.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
# Ray puts unix sockets under its temp dir: keep the path short.
TEMP_DIR=${RAY_CLUSTER_TEMP:-/tmp/gp-ray-$PORT}
PIDS="$TEMP_DIR/cluster.pids"
if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  export RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-$TEMP_DIR/auth_token}
fi

new_token() {
  [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] || return 0
  [ -s "$RAY_AUTH_TOKEN_PATH" ] && return 0
  mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
  (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$RAY_AUTH_TOKEN_PATH")
}

descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do
    echo "$child"
    descendants "$child"
  done
}

cluster_pids() {
  # the daemons of this cluster (their command lines name its session dir or its GCS port),
  # and everything they started; never this script itself
  local pid
  for pid in $(pgrep -f -- "$TEMP_DIR(-w)?/session_|:$PORT( |$)" || true); do
    [ "$pid" = "$$" ] && continue
    echo "$pid"
    descendants "$pid"
  done | sort -un
}

case "${1:-}" in
  up)
    mkdir -p "$TEMP_DIR"
    new_token
    "$RAY" start --head --port="$PORT" \
      --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
      --dashboard-agent-listen-port="$AGENT_PORT" \
      --object-store-memory="$OBJECT_STORE" --num-cpus="$CPUS_PER_NODE" \
      --temp-dir="$TEMP_DIR" --disable-usage-stats >"$TEMP_DIR/head.log" 2>&1
    # its own temp dir: two nodes of one host sharing one would unpack a job's working_dir
    # into the same folder, and one node's cleanup pulls it from under the other's driver
    "$PYTHON" "$(dirname "$0")/ray_local_node.py" start --address="127.0.0.1:$PORT" \
      --dashboard-agent-listen-port="$WORKER_AGENT_PORT" \
      --object-store-memory="$OBJECT_STORE" --num-cpus="$CPUS_PER_NODE" \
      --temp-dir="$TEMP_DIR-w" --disable-usage-stats >"$TEMP_DIR/worker.log" 2>&1
    for _ in $(seq 60); do  # until the worker node has registered with the head
      nodes=$("$RAY" status --address="127.0.0.1:$PORT" 2>/dev/null | grep -c " node_" || true)
      [ "$nodes" -ge 2 ] && break
      sleep 0.5
    done
    cluster_pids >"$PIDS"
    echo "Ray cluster up: 2 nodes on 127.0.0.1:$PORT ($(wc -l <"$PIDS") processes, see $PIDS)"
    echo "export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT RAY_AUTH_MODE=$RAY_AUTH_MODE" \
      "${RAY_AUTH_TOKEN_PATH:+RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH}"
    ;;
  down)
    [ -f "$PIDS" ] || { echo "no cluster recorded in $PIDS"; exit 0; }
    pids=$( (cat "$PIDS"; cluster_pids) | sort -un)
    kill $pids 2>/dev/null || true
    for _ in $(seq 50); do  # 10 s, then SIGKILL (gcs_server may ignore SIGTERM)
      alive=$(for p in $pids; do if kill -0 "$p" 2>/dev/null; then echo "$p"; fi; done)
      [ -z "$alive" ] && break
      sleep 0.2
    done
    if [ -n "${alive:-}" ]; then
      kill -9 $alive 2>/dev/null || true
      for _ in $(seq 50); do
        alive=$(for p in $alive; do if kill -0 "$p" 2>/dev/null; then echo "$p"; fi; done)
        [ -z "$alive" ] && break
        sleep 0.1
      done
    fi
    rm -f "$PIDS"
    [ "${RAY_AUTH_TOKEN_PATH:-}" = "$TEMP_DIR/auth_token" ] && rm -f "$RAY_AUTH_TOKEN_PATH"
    echo "Ray cluster on port $PORT stopped"
    ;;
  status)
    "$RAY" status --address="127.0.0.1:$PORT"
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
