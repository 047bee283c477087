# shellcheck shell=bash
# tandem netns lab: topology, processes and cleanup. Sourced by `lab` and `drill`.
#
# Every namespace of one run is named tnd-<pid>-<node> so two runs never collide; a trap kills every process the
# run started (by pid) and deletes its namespaces on exit, INT and TERM. All waits are bounded.
#
# Topology (one /24, the OpenStack guide's addresses, living only inside the namespaces):
#   tnd-<pid>-br      bridge br0; one veth port per node, named after the node
#   tnd-<pid>-lb1     eth0 192.168.1.21   (tandem primary)     owns 10.77.0.0/24 route via the client
#   tnd-<pid>-lb2     eth0 192.168.1.22   (tandem secondary)
#   tnd-<pid>-client  eth0 192.168.1.10   (+ 10.77.0.0/24 on lo: many source addresses for persistence drills)
#   tnd-<pid>-gw      eth0 192.168.1.1    (the ping node)
#   tnd-<pid>-ctl1..3 eth0 192.168.1.150-152 running tnd-backend (every OpenStack port)
#   tnd-<pid>-flood   eth0 192.168.1.66   (the flood drill's attacker; added by that drill only: lab_node_add)
# The VIP 192.168.1.250 floats between lb1 and lb2.
# IPv6 (the ipv6 drill only: lab_ipv6 on|off): every node also gets fd7e:0:0:1::<its IPv4 last octet>/64 on eth0
# (lb1 fd7e:0:0:1::21, ctl1 fd7e:0:0:1::150) on the same bridge; the IPv6 VIP is fd7e:0:0:1::250. Off otherwise.

set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TND_ROOT=$(cd "$LAB_DIR/.." && pwd)
LAB_ID="tnd-$$"
LAB_TMP=""
LAB_KEEP_LOGS=${LAB_KEEP_LOGS:-0}
LAB_FAILED=0
VIP=192.168.1.250
LAB_NODES=(lb1 lb2 client gw ctl1 ctl2 ctl3)
VIP6=fd7e:0:0:1::250          # the ipv6 drill's VIP (it sets VIP=$VIP6 for its own run)
LAB_V6_PREFIX=fd7e:0:0:1      # a ULA /64: lab_ipv6
CLIENT_SOURCES=10.77.0.0/24   # persistence drills: 254 clients
BULK_SOURCES=10.64.0.0/12     # resync-large: a million clients
declare -A NODE_IP=(
  [lb1]=192.168.1.21 [lb2]=192.168.1.22 [client]=192.168.1.10 [gw]=192.168.1.1
  [ctl1]=192.168.1.150 [ctl2]=192.168.1.151 [ctl3]=192.168.1.152 [flood]=192.168.1.66
)
declare -A NODE_MAC=(
  [lb1]=02:7e:00:00:01:21 [lb2]=02:7e:00:00:01:22 [client]=02:7e:00:00:01:10 [gw]=02:7e:00:00:01:01
  [ctl1]=02:7e:00:00:01:50 [ctl2]=02:7e:00:00:01:51 [ctl3]=02:7e:00:00:01:52 [flood]=02:7e:00:00:01:66
)

# The instruments (probe, watchers) run with a real-time priority so that a busy machine delays what is measured,
# not the measuring; LAB_RT=0 turns that off. LAB_RT_DAEMONS=1 gives tandem and keepalived one too (a deployment
# choice, like corosync's), for low-noise figures on a loaded machine.
LAB_RT=${LAB_RT:-1}
LAB_RT_DAEMONS=${LAB_RT_DAEMONS:-0}
rt_prefix() { # LEVEL(instrument|daemon) -> words to put before a command
  local want=$LAB_RT prio=20
  [[ $1 == daemon ]] && want=$LAB_RT_DAEMONS prio=10
  if [[ $want == 1 ]] && command -v chrt >/dev/null; then echo "chrt -f $prio"; fi
}

log() { printf '%s [lab] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Milliseconds since the epoch, with microsecond decimals, without forking.
now_ms() { local t=${EPOCHREALTIME/./}; printf '%d.%03d' "$((t / 1000))" "$((t % 1000))"; }
# Arithmetic on decimal milliseconds (awk: no bc needed).
calc() { awk "BEGIN { printf \"%.1f\", $* }"; }
calc_le() { awk "BEGIN { exit !(($1) <= ($2)) }"; }

ns() { printf '%s-%s' "$LAB_ID" "$1"; }
nsx() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

# ---------------------------------------------------------------- binaries
pick_bin() { # NAME -> path of target/release/NAME or target/debug/NAME (newest wins)
  local name=$1 rel="$TND_ROOT/target/release/$1" dbg="$TND_ROOT/target/debug/$1"
  if [[ -x $rel && ( ! -x $dbg || $rel -nt $dbg ) ]]; then echo "$rel"
  elif [[ -x $dbg ]]; then echo "$dbg"
  else echo ""; fi
}

lab_build() { # build what is missing: the lab tools, and tandem when asked (lab_build tandem)
  local need=()
  for b in tnd-backend tnd-probe tnd-watch tnd-json tnd-flood; do [[ -n $(pick_bin "$b") ]] || need=(-p tandem-lab); done
  if [[ ${1:-} == tandem && -z $(pick_bin tandem) ]]; then need+=(-p tandem); fi
  if ((${#need[@]})); then
    log "building ${need[*]}"
    (cd "$TND_ROOT" && cargo build "${need[@]}" >&2) || die "cargo build ${need[*]} failed"
  fi
  BACKEND=$(pick_bin tnd-backend); PROBE=$(pick_bin tnd-probe); WATCH=$(pick_bin tnd-watch); JSON=$(pick_bin tnd-json)
  FLOOD=$(pick_bin tnd-flood)
  TANDEM=$(pick_bin tandem)
  log "using ${TANDEM:-no tandem binary} and $PROBE"
}

# ---------------------------------------------------------------- processes
# start_bg NAME NODE CMD... : run CMD inside NODE's namespace, log to $LAB_TMP/NAME.log, pid in $LAB_TMP/NAME.pid
start_bg() {
  local name=$1 node=$2; shift 2
  # started from a subshell that exits at once: the process is re-parented (reaped by init, no job notices)
  (
    ip netns exec "$(ns "$node")" "$@" >>"$LAB_TMP/$name.log" 2>&1 </dev/null &
    echo $! >"$LAB_TMP/$name.pid"
  )
}
pid_of() { cat "$LAB_TMP/$1.pid" 2>/dev/null || true; }
# pid_alive PID: running (a zombie -- dead, not yet reaped by this shell -- counts as gone)
pid_alive() {
  local stat
  [[ -n $1 && -e /proc/$1/stat ]] && { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}
alive() { pid_alive "$(pid_of "$1")"; }
pid_gone() { ! pid_alive "$1"; }
# stop_bg NAME [SIGNAL] [TIMEOUT_S]: signal, wait (bounded), then SIGKILL
stop_bg() {
  local name=$1 sig=${2:-TERM} limit=${3:-5} p i
  p=$(pid_of "$name"); [[ -n $p ]] || return 0
  kill -"$sig" "$p" 2>/dev/null || true
  for ((i = 0; i < limit * 100; i++)); do pid_alive "$p" || break; sleep 0.01; done
  if pid_alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
  rm -f "$LAB_TMP/$name.pid"
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD (every WAIT_STEP seconds, 0.01, plus its own run time) until it succeeds; 1 once
# SECONDS of wall-clock time have passed
wait_for() {
  local limit=$1 what=$2 deadline now; shift 2
  deadline=$(( ${EPOCHREALTIME/./} + ${limit%.*} * 1000000 ))
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    now=${EPOCHREALTIME/./}
    if ((now >= deadline)); then break; fi
    sleep "${WAIT_STEP:-0.01}"
  done
  log "timed out after ${limit}s waiting for $what"
  return 1
}

# ---------------------------------------------------------------- topology
lab_cleanup() {
  local rc=$? f p n
  set +e
  trap - EXIT INT TERM
  if [[ -n $LAB_TMP && -d $LAB_TMP ]]; then
    for f in "$LAB_TMP"/*.pid; do
      [[ -e $f ]] || continue
      p=$(cat "$f"); [[ -n $p ]] && kill -TERM "$p" 2>/dev/null
    done
    sleep 0.2
    for f in "$LAB_TMP"/*.pid; do
      [[ -e $f ]] || continue
      p=$(cat "$f"); [[ -n $p ]] && kill -KILL "$p" 2>/dev/null
    done
  fi
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$LAB_ID-" || true); do
    # anything still running inside one of this run's namespaces was started by this run
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns delete "$n" 2>/dev/null
  done
  if [[ -n $LAB_TMP && -d $LAB_TMP ]]; then
    if ((rc != 0 || LAB_FAILED != 0 || LAB_KEEP_LOGS != 0)); then
      log "logs kept in $LAB_TMP"
    else
      rm -rf "$LAB_TMP"
    fi
  fi
  exit "$rc"
}

lab_traps() {
  trap lab_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# Remove namespaces left by runs that were SIGKILLed (their pid is gone).
lab_reap_stale() {
  local n pid p
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^tnd-[0-9]+-' || true); do
    pid=${n#tnd-}; pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then
      log "removing stale namespace $n"
      for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
      ip netns delete "$n" 2>/dev/null || true
    fi
  done
}

lab_topology() {
  [[ $(id -u) == 0 ]] || die "the lab needs root (network namespaces)"
  # LAB_TMP_ROOT=/dev/shm keeps the run's logs off a disk that parallel builds keep busy
  LAB_TMP=$(mktemp -d "${LAB_TMP_ROOT:-/tmp}/$LAB_ID.XXXXXX")
  lab_traps
  lab_reap_stale
  local br node
  br=$(ns br)
  ip netns add "$br"
  ip -n "$br" link set lo up
  ip -n "$br" link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  ip -n "$br" link set br0 up
  for node in "${LAB_NODES[@]}"; do lab_node_add "$node"; done
  # the client owns a whole /24 of source addresses on lo (local route), the LBs route it back via the client
  ip -n "$(ns client)" addr add "$CLIENT_SOURCES" dev lo
  ip -n "$(ns client)" addr add "$BULK_SOURCES" dev lo
  nsx client sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
  for node in lb1 lb2; do
    ip -n "$(ns "$node")" route add "$CLIENT_SOURCES" via "${NODE_IP[client]}"
    ip -n "$(ns "$node")" route add "$BULK_SOURCES" via "${NODE_IP[client]}"
    # the proxy's connections to the controllers close first on the LB side: let TIME_WAIT ports be reused.
    # The widened range covers the daemon's own ports: reserved, as docs/deployment.md tells operators, or a health
    # check's local port 7778 keeps the next daemon from binding its sync listener (CI saw 16 drills fail so).
    nsx "$node" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1 \
      net.ipv4.ip_local_reserved_ports="6694,7778,9080"
  done
  log "topology $LAB_ID up (logs in $LAB_TMP)"
}

# lab_node_add NODE: a namespace on the bridge with NODE's address and MAC (no-op if it exists)
lab_node_add() {
  local node=$1 br
  br=$(ns br)
  [[ -e /run/netns/$(ns "$node") ]] && return 0
  ip netns add "$(ns "$node")"
  # created inside the bridge namespace, the node end moved straight into its own: the host is never touched
  ip -n "$br" link add "$node" type veth peer name eth0 netns "$(ns "$node")"
  ip -n "$br" link set "$node" master br0 up
  nsx "$node" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$(ns "$node")" link set lo up
  ip -n "$(ns "$node")" link set eth0 address "${NODE_MAC[$node]}"
  ip -n "$(ns "$node")" addr add "${NODE_IP[$node]}/24" dev eth0
  ip -n "$(ns "$node")" link set eth0 up
}

# node_ip6 NODE: NODE's IPv6 address, its IPv4 node number under the lab's /64 (lb1 -> fd7e:0:0:1::21)
node_ip6() { echo "$LAB_V6_PREFIX::${NODE_IP[$1]##*.}"; }
# lab_ipv6 on|off: IPv6 on every node's eth0 (its node_ip6/64, no DAD, no router discovery), or off again (the
# kernel then drops every IPv6 address, the VIP included). The other drills run with IPv6 off: no MLD, DAD or
# router solicitations on the bridge.
lab_ipv6() {
  local node conf
  for node in "${LAB_NODES[@]}"; do
    if [[ $1 == on ]]; then
      for conf in default eth0; do
        nsx "$node" sysctl -qw "net.ipv6.conf.$conf.accept_dad=0" "net.ipv6.conf.$conf.accept_ra=0" \
          "net.ipv6.conf.$conf.router_solicitations=0"
      done
      nsx "$node" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 net.ipv6.conf.eth0.disable_ipv6=0
      ip -n "$(ns "$node")" addr replace "$(node_ip6 "$node")/64" dev eth0 nodad
    else
      nsx "$node" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.eth0.disable_ipv6=1 || true
    fi
  done
}

# proc_ticks PID [THREAD_COMM]: CPU time (utime + stime, clock ticks) of a process, or of its threads named
# THREAD_COMM (e.g. tandem-heartbea, the kernel's 15-character cut); 0 when gone
proc_ticks() {
  local pid=$1 comm=${2:-} f stat total=0 fields
  if [[ -z $comm ]]; then
    read -r stat <"/proc/$pid/stat" 2>/dev/null || { echo 0; return; }
    read -r -a fields <<<"${stat##*) }"
    echo $((fields[11] + fields[12])); return
  fi
  for f in /proc/"$pid"/task/*; do
    [[ $(cat "$f/comm" 2>/dev/null) == "$comm" ]] || continue
    read -r stat <"$f/stat" 2>/dev/null || continue
    read -r -a fields <<<"${stat##*) }"
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# cpu_pct TICKS SECONDS: percent of one core
cpu_pct() { awk -v t="$1" -v s="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (s > 0 ? t / hz / s * 100 : 0) }'; }

lab_backends() {
  local c
  for c in ctl1 ctl2 ctl3; do
    start_bg "backend-$c" "$c" "$BACKEND" --name "$c" --address "${NODE_IP[$c]}" --ready-file "$LAB_TMP/backend-$c.ready"
  done
  for c in ctl1 ctl2 ctl3; do
    wait_for 10 "backend $c" test -e "$LAB_TMP/backend-$c.ready" || die "backend $c did not start"
  done
}

# vip_on NODE: 0 when NODE holds the VIP (IPv4 or IPv6). The list is read whole first: `ip | grep -q` under
# pipefail fails when grep exits before ip has written everything (SIGPIPE), which IPv6's longer lists made likely.
vip_on() { local a; a=$(ip -n "$(ns "$1")" -o addr show dev eth0 2>/dev/null) || true; [[ $a == *" $VIP/"* ]]; }
vip_holders() { local n=0; vip_on lb1 && n=$((n + 1)); vip_on lb2 && n=$((n + 1)); echo "$n"; }
vip_holder() { if vip_on lb1; then echo lb1; elif vip_on lb2; then echo lb2; else echo none; fi; }
vip_flush() {
  local n len
  for n in lb1 lb2; do
    for len in 24 32 128; do ip -n "$(ns "$n")" addr del "$VIP/$len" dev eth0 2>/dev/null || true; done
  done
}
# vip_target PORT: VIP:PORT as a socket address (an IPv6 VIP in brackets)
vip_target() { if [[ $VIP == *:* ]]; then echo "[$VIP]:$1"; else echo "$VIP:$1"; fi; }

# client_neigh_mac: the client's ARP entry for the VIP ("" when none)
client_neigh_mac() { ip -n "$(ns client)" neigh show "$VIP" dev eth0 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}'; }
# point the client's ARP entry for the VIP at NODE and mark it REACHABLE (fresh for ~15-45 s): from now on only an
# announcement from the new holder can change it
client_neigh_prime() { ip -n "$(ns client)" neigh replace "$VIP" dev eth0 lladdr "${NODE_MAC[$1]}" nud reachable; }

# ---------------------------------------------------------------- drill instruments
# watchers: one tnd-watch per LB node, lines {"label","present","at_ms"}
watch_start() {
  local n
  for n in lb1 lb2; do
    : >"$LAB_TMP/watch-$n.log"
    # shellcheck disable=SC2046
    start_bg "watch-$n" "$n" $(rt_prefix instrument) "$WATCH" --address "$VIP" --label "$n" --interval-ms 1 --max-duration-ms 900000
  done
  wait_for 5 "watchers" test -s "$LAB_TMP/watch-lb1.log" -a -s "$LAB_TMP/watch-lb2.log"
}
watch_stop() { stop_bg watch-lb1 TERM 2; stop_bg watch-lb2 TERM 2; }
# first time (epoch ms) at or after T that NODE's watcher saw the VIP appear/leave ("" if never)
watch_first() { # NODE present|absent T
  local want=true; [[ $2 == absent ]] && want=false
  awk -v want="$want" -v t="$3" -F'[,:}]' '
    { p = ""; a = "";
      for (i = 1; i <= NF; i++) { if ($i ~ /"present"/) p = $(i + 1); if ($i ~ /"at_ms"/) a = $(i + 1) }
      if (p == want && a + 0 >= t + 0) { print a; exit } }' "$LAB_TMP/watch-$1.log"
}
# how many times NODE's VIP changed presence after T
watch_changes() { awk -v t="$2" -F'[,:}]' '{ for (i = 1; i <= NF; i++) if ($i ~ /"at_ms"/ && $(i + 1) + 0 >= t + 0) n++ } END { print n + 0 }' "$LAB_TMP/watch-$1.log"; }
watch_seen() { [[ -n $(watch_first "$1" "$2" "$3") ]]; }
# wait until NODE's watcher reports presence (present|absent) after T, bounded by SECONDS
watch_wait() { wait_for "$4" "VIP $2 on $1" watch_seen "$1" "$2" "$3"; }

# vip_serves PORT: one short probe from the client gets an answer from a controller through the VIP
vip_serves() {
  local n
  n=$(nsx client "$PROBE" --target "$(vip_target "$1")" --mode "${PROBE_MODE:-tcp}" --interval-ms 10 --duration-ms 25 --timeout-ms 200 2>/dev/null | "$JSON" get successes)
  [[ -n $n && $n != 0 ]]
}

# client probe (tnd-probe in the client namespace) against VIP:PORT
probe_start() { # NAME PORT [extra args]
  local name=$1 port=$2; shift 2
  rm -f "$LAB_TMP/$name.stop" "$LAB_TMP/$name.ready" "$LAB_TMP/$name.json"
  # shellcheck disable=SC2046
  start_bg "$name" client $(rt_prefix instrument) "$PROBE" --target "$(vip_target "$port")" --interval-ms "${PROBE_INTERVAL_MS:-10}" \
    --timeout-ms "${PROBE_TIMEOUT_MS:-200}" --duration-ms "${PROBE_DURATION_MS:-600000}" --stop-file "$LAB_TMP/$name.stop" \
    --ready-file "$LAB_TMP/$name.ready" --out "$LAB_TMP/$name.json" --events "$LAB_TMP/$name.events" --warmup "$@"
  wait_for 30 "probe $name first success" test -e "$LAB_TMP/$name.ready"
}
probe_stop() { # NAME -> summary path
  local name=$1
  touch "$LAB_TMP/$name.stop"
  wait_for 5 "probe $name summary" test -s "$LAB_TMP/$name.json" || true
  stop_bg "$name" TERM 2
  echo "$LAB_TMP/$name.json"
}

# ARP capture on the client: gratuitous announcements seen and requests the client itself sent for the VIP
arp_capture_start() {
  : >"$LAB_TMP/arp.log"
  if command -v tcpdump >/dev/null; then
    start_bg arp-capture client tcpdump -i eth0 -n -e -l -tt -U arp
    sleep 0.3 # tcpdump needs a moment before it captures
  fi
}
arp_capture_stop() { if alive arp-capture; then sleep 0.05; stop_bg arp-capture INT 2; fi; }
# announcements for the VIP from MAC after T (request form "who-has VIP tell VIP", or reply form)
arp_garps_from() {
  awk -v t="$2" -v mac="$1" -v vip="$VIP" '
    BEGIN { gsub(/\./, "\\.", vip) }
    ($1 * 1000 >= t + 0) && $2 == mac && ($0 ~ ("who-has " vip "( [(][^)]*[)])? tell " vip ",") || $0 ~ ("Reply " vip " is-at")) { n++ }
    END { print n + 0 }' "$LAB_TMP/arp-capture.log" 2>/dev/null || echo 0
}
# arp_announcement_times: the capture's times (ms since the epoch) of every announcement for the VIP, from any node
arp_announcement_times() {
  awk -v vip="$VIP" '
    BEGIN { gsub(/\./, "\\.", vip) }
    $0 ~ ("who-has " vip "( [(][^)]*[)])? tell " vip ",") || $0 ~ ("Reply " vip " is-at") { printf "%.3f ", $1 * 1000 }' \
    "$LAB_TMP/arp-capture.log" 2>/dev/null || true
}
# ARP requests for the VIP that the client sent after T (it re-resolved instead of being told)
arp_client_requests() {
  awk -v t="$1" -v vip="$VIP" -v me="${NODE_IP[client]}" '
    BEGIN { gsub(/\./, "\\.", vip); gsub(/\./, "\\.", me) }
    ($1 * 1000 >= t + 0) && $0 ~ ("who-has " vip "( [(][^)]*[)])? tell " me ",") { n++ } END { print n + 0 }' \
    "$LAB_TMP/arp-capture.log" 2>/dev/null || echo 0
}
