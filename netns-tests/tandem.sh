# shellcheck shell=bash
# Running tandem on the lab's two LB nodes with the OpenStack example config. Sourced after lib.sh.
#
# Each node gets its own config dir $LAB_TMP/tandem/NODE holding cluster.toml (the example's, with [heartbeat]
# rewritten per drill), node.toml (the example's node-NODE.toml, with state_dir moved into the config dir), the shared
# secret (`tandem keygen`, one for both nodes) and the admin password file.

EXAMPLE_DIR="$TND_ROOT/deploy/examples/openstack"

# toml_set FILE SECTION KEY VALUE: set KEY = VALUE (VALUE written as TOML) inside [SECTION], adding it if missing
toml_set() {
  local file=$1 section=$2 key=$3 value=$4 tmp
  tmp=$(mktemp "$file.XXXXXX")
  awk -v section="[$section]" -v key="$key" -v value="$value" '
    function flush() { if (in_section && !done) { print key " = " value; done = 1 } }
    /^\[/ { hdr = $1; if (in_section && hdr != section) flush(); in_section = (hdr == section) }
    in_section && $0 ~ ("^" key "[ \t]*=") { print key " = " value; done = 1; next }
    { print }
    END { flush() }' "$file" >"$tmp"
  mv "$tmp" "$file"
}

td_dir() { echo "$LAB_TMP/tandem/$1"; }

# td_configure INTERVAL_MS DEAD_MS [KEY=TOML_VALUE ...] (empty timings keep the example's): (re)write both nodes' config dirs; extra keys go to
# [heartbeat] (e.g. auto_failback=true, 'ping_nodes=["192.168.1.1"]')
td_configure() {
  local interval=$1 dead=$2 node dir kv warn
  shift 2
  [[ -e $LAB_TMP/tandem/secret ]] || {
    mkdir -p "$LAB_TMP/tandem"
    "$TANDEM" keygen "$LAB_TMP/tandem/secret" >&2
  }
  for node in lb1 lb2; do
    dir=$(td_dir "$node")
    mkdir -p "$dir/state"
    cp "$EXAMPLE_DIR/cluster.toml" "$dir/cluster.toml"
    cp "$EXAMPLE_DIR/node-$node.toml" "$dir/node.toml"
    cp "$LAB_TMP/tandem/secret" "$dir/secret"
    chmod 600 "$dir/secret"
    # the password file holds a hash (tandem password); the lab's CLI uses the node's own admin socket, each node
    # its own path (the namespaces share one filesystem)
    [[ -e $dir/admin-password ]] || echo "lab-$$" | "$TANDEM" password "$dir/admin-password" >/dev/null
    toml_set "$dir/node.toml" admin socket "\"$dir/admin.sock\""
    toml_set "$dir/node.toml" node state_dir "\"$dir/state\""
    toml_set "$dir/node.toml" node manage_vips true
    if [[ -n $interval ]]; then # empty: keep the example's timings
      warn=$(((interval + dead) / 2))
      toml_set "$dir/cluster.toml" heartbeat interval_ms "$interval"
      toml_set "$dir/cluster.toml" heartbeat dead_ms "$dead"
      toml_set "$dir/cluster.toml" heartbeat warn_ms "$warn"
    fi
    for kv in "$@"; do toml_set "$dir/cluster.toml" heartbeat "${kv%%=*}" "${kv#*=}"; done
    # every drill's pair with another handover drain (docs/protocol.md; 0 = off), e.g. to compare
    if [[ -n ${TD_HANDOVER_DRAIN_MS:-} ]]; then toml_set "$dir/cluster.toml" heartbeat handover_drain_ms "$TD_HANDOVER_DRAIN_MS"; fi
    if [[ -n ${TD_CLUSTER_SED:-} ]]; then sed -i "$TD_CLUSTER_SED" "$dir/cluster.toml"; fi # a drill's own edit
    if [[ -n ${TD_CLUSTER_APPEND:-} ]]; then cat "$TD_CLUSTER_APPEND" >>"$dir/cluster.toml"; fi # a drill's own services
    if [[ -n ${TD_NODE_APPEND:-} ]]; then cat "$TD_NODE_APPEND" >>"$dir/node.toml"; fi # e.g. a [tuning] section
    if [[ -n ${TD_HEALTH_INTERVAL_MS:-} ]]; then # drills: servers rise sooner after each fresh start
      toml_set "$dir/cluster.toml" health_check interval_ms "$TD_HEALTH_INTERVAL_MS"
      toml_set "$dir/cluster.toml" health_check timeout_ms "$((TD_HEALTH_INTERVAL_MS * 4 / 5))"
    fi
  done
}

td_start() { # NODE
  local node=$1
  # shellcheck disable=SC2046
  start_bg "tandem-$node" "$node" $(rt_prefix daemon) env RUST_LOG="${RUST_LOG:-info}" "$TANDEM" run --config-dir "$(td_dir "$node")"
}
td_cli() { # NODE ARGS... : the tandem CLI inside NODE's namespace, talking to NODE's admin address
  local node=$1; shift
  nsx "$node" "$TANDEM" "$@" --config-dir "$(td_dir "$node")"
}
td_status_json() { td_cli "$1" status --json 2>/dev/null; }
# td_rejected NODE: heartbeat datagrams NODE rejected so far, all reasons together
td_rejected() {
  td_status_json "$1" | python3 -c 'import json, sys; print(sum(json.load(sys.stdin)["cluster"]["heartbeats"]["rejected"].values()))' \
    2>/dev/null || echo 0
}
td_state() { td_status_json "$1" | "$JSON" get node.state 2>/dev/null || echo unknown; }
# td_table_entries NODE LABEL: entries of LABEL's persistence table on NODE (from the replication status)
td_table_entries() { td_status_json "$1" | "$JSON" get "replication.tables.label=$2.local_entries" 2>/dev/null || echo null; }
# td_cli_error NODE: the last line `tandem status` printed on stderr (never fails: it runs inside errexit drills)
td_cli_error() { { td_cli "$1" status --json 2>&1 >/dev/null || true; } | tail -n 1 | cut -c1-200 || true; }
# td_state_said NODE: the state, or "unknown" with the CLI's own error and whether the daemon runs (for violations)
td_state_said() {
  local state
  state=$(td_state "$1")
  if [[ $state == unknown ]]; then
    state+=" ($(alive "tandem-$1" && echo running || echo "not running"); CLI: $(td_cli_error "$1"))"
  fi
  printf '%s\n' "$state"
}
td_is() { [[ $(td_state "$1") == "$2" ]]; } # NODE STATE

# td_stop NODE [SIGNAL]: stop NODE's daemon (TERM = clean stop), bounded
td_stop() { stop_bg "tandem-$1" "${2:-TERM}" 10; }
td_stop_all() { td_stop lb1 TERM; td_stop lb2 TERM; }

# td_wait_state NODE STATE SECONDS (gives up early when the daemon has exited)
td_is_or_dead() { td_is "$1" "$2" && return 0; alive "tandem-$1" || { TD_DEAD=1; return 0; }; return 1; }
td_wait_state() {
  TD_DEAD=0
  # the CLI is a process start per poll: 10 polls a second keep the lab's CPUs for the daemons
  WAIT_STEP=0.1 wait_for "$3" "$1 $2" td_is_or_dead "$1" "$2" || return 1
  if ((TD_DEAD)); then log "tandem on $1 is not running:"; tail -n 5 "$LAB_TMP/tandem-$1.log" >&2; return 1; fi
}

# td_pair INTERVAL DEAD [KEYS...]: a fresh pair, lb1 active with the VIP, lb2 standby; returns 1 if it never settles
td_pair() {
  td_stop_all
  vip_flush
  td_configure "$@"
  td_start lb1
  td_start lb2
  local limit=20
  td_wait_state lb1 active "$limit" && td_wait_state lb2 standby "$limit" && wait_for 5 "VIP on lb1 only" vip_only lb1 || {
    td_unsettled_reason >>"$LAB_TMP/violations"
    log "$(tail -n 1 "$LAB_TMP/violations")"
    tail -n 20 "$LAB_TMP/tandem-lb1.log" "$LAB_TMP/tandem-lb2.log" >&2 || true
    return 1
  }
}
# td_unsettled_reason: one line for the drill's FAILED summary (the last lines a CI log keeps): each node's state,
# the VIP holders, and for a daemon that is not running the last error it logged
td_unsettled_reason() {
  local n why last state
  why="pair did not settle: holders=$(vip_holders)"
  for n in lb1 lb2; do
    state=$(td_state "$n")
    why+="; $n $state"
    alive "tandem-$n" || why+=" (not running)"
    [[ $state == unknown ]] || continue # the status answered: the drill's own checks say more
    why+=", status: $(td_cli_error "$n")"
    # `^tandem:` is how a start-up failure reaches stderr (anyhow's message, e.g. a port already in use)
    last=$(grep -aE 'WARN|ERROR|panick|rejected|^tandem:' "$LAB_TMP/tandem-$n.log" 2>/dev/null | tail -n 1 | cut -c1-400 || true)
    why+=", last logged: ${last:-nothing above info}"
  done
  printf '%s\n' "$why"
}
vip_only() { [[ $(vip_holders) == 1 ]] && vip_on "$1"; }
