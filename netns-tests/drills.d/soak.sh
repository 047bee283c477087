# shellcheck shell=bash
# soak (issue 16): SOAK_S (600) seconds of HTTP load (wrk on horizon, VIP:80, HTTP mode) and TCP load (redis-benchmark
# against real redis-servers through the VIP: the example's `redis` service, VIP:6379, TCP, last-successful persistence;
# each controller runs Debian's redis-server there instead of tnd-backend) while SOAK_FAILOVERS (30) failovers run, one every
# SOAK_S / SOAK_FAILOVERS seconds, in this order, over and over:
#   crash        SIGKILL the active lb1                                  lb1 -> lb2
#   failback     lb1 restarted; auto_failback = true hands it back        lb2 -> lb1
#   host-crash   nft drops everything on lb1's eth0, then SIGKILL         lb1 -> lb2  (after dead_ms)
#   failback     the rule removed, lb1 restarted                          lb2 -> lb1
#   clean-stop   SIGTERM lb1                                             lb1 -> lb2
#   failback     lb1 restarted                                           lb2 -> lb1
#   takeover     `tandem takeover` on lb2                                lb1 -> lb2
#   takeover     `tandem takeover` on lb1                                lb2 -> lb1
# Every failure hits lb1, so lb2's daemon lives through the whole run (its RSS and open files are what is bounded);
# lb1's process is restarted after each failure (its figures are per lifetime, reported only).
# Throughout, a tnd-probe on horizon (HTTP, every 10 ms, --events) locates failures in time, and a second one on
# nova_novncproxy (6080, source-ip persistence) from 254 sources (10.77.0.0/24) keeps a stick table busy.
# Failover windows come from the watchers: from the event (or, for a failback, 5 ms before the VIP's first move) to
# SOAK_TAIL_MS (1000) after the VIP reached the new holder (a request sent into a silent host is answered by the new
# holder's RST only at its next retransmission). Asserted:
#   *_outside_windows_unexplained = 0 for wrk (run in 1 s chunks: a chunk with errors must overlap a window), for
#     redis-benchmark (short runs: it exits at its first error; a failed run must overlap a window), and for both
#     probes (every failed attempt must overlap a window), where "unexplained" leaves out the errors that overlap a
#     stall of the machine (soak_stall_watch: a loop at the daemons' priority not run for SOAK_STALL_MS = 100 ms or
#     more, e.g. while another job hogs both cores); the raw *_outside_windows and *_in_stalls are reported too;
#   lost_stick_entries = 0: no source of the 6080 probe changed controller over the run, and the active's table holds
#     as many entries as the standby's at the end (and all 254 sources);
#   split_brain_episodes = 0 (never both nodes holding the VIP for 1 ms or more: the watchers' resolution), an overlap
#     starting within 1 s of a crash of lb1 being the dead node's stale VIP instead (its guardian removes it):
#     stale_vip_overlap_longest_ms <= 100, the stale-vip drill's bound; an overlap within 5 s after a planned
#     handover (make-before-break), at most max(interval, 20) + max(dead, 250) + 10 ms long, is planned_overlaps;
#   lb2's daemon (one process over the run): VmRSS and open files (/proc/PID/status, /proc/PID/fd, sampled every
#     SOAK_SAMPLE_S) grow <= 5 % (in runs of SOAK_FLAT_MIN_S = 300 s or more; shorter runs report them): VmRSS as the
#     largest sample of the last quarter of the run against the largest of the quarter after the warm-up (the first
#     quarter); open files less the process's TCP connections at that moment (client, server, health-check and sync
#     connections come and go with the load; what is left is listeners, sockets, timers, files: what a leak grows),
#     median of the last quarter against the median of the second (the raw count's extremes are reported);
#   every failover moved the VIP; 1 holder at the end.
# --short: SOAK_SHORT_S (40) seconds, SOAK_SHORT_FAILOVERS (8: the cycle once).

TANDEM_DRILLS+=(soak)
variants_soak() { echo "200 1000"; } # the default timings: a soak is about staying well, not speed

SOAK_S=${SOAK_S:-600}
SOAK_FAILOVERS=${SOAK_FAILOVERS:-30}
SOAK_SHORT_S=${SOAK_SHORT_S:-40}
SOAK_SHORT_FAILOVERS=${SOAK_SHORT_FAILOVERS:-8}
SOAK_TAIL_MS=${SOAK_TAIL_MS:-1000}
SOAK_SAMPLE_S=${SOAK_SAMPLE_S:-2}
SOAK_FLAT_MIN_S=${SOAK_FLAT_MIN_S:-300}             # memory and files are bounded in runs at least this long
SOAK_STALL_MS=${SOAK_STALL_MS:-100}                 # the stall watch's threshold
SOAK_PROBE_TIMEOUT_MS=${SOAK_PROBE_TIMEOUT_MS:-1000} # the soak's probes: an attempt unanswered this long failed
SOAK_WRK_DELAY_MS=${SOAK_WRK_DELAY_MS:-5}           # per connection between requests: ~800 req/s on 4 connections
SOAK_REDIS_ARGS=${SOAK_REDIS_ARGS:--c 4 -n 1000 -t set,get}
SOAK_REDIS_PORT=6379
read -r -a SOAK_CYCLE <<<"${SOAK_EVENTS:-crash failback host-crash failback clean-stop failback takeover-lb2 takeover-lb1}"

# The example's redis service (VIP:6379, TCP, last-successful persistence) gets real redis-servers: the controllers'
# tnd-backend is restarted on every example port but 6379 (and put back afterwards).
soak_backends() { # without-redis|all
  local c ports=()
  if [[ $1 == without-redis ]]; then
    mapfile -t ports < <(sed -n 's/^ports = \[\(.*\)\]/\1/p' "$EXAMPLE_DIR/cluster.toml" | tr ', ' '\n\n' | grep -vx "$SOAK_REDIS_PORT" | grep . | sort -un)
  fi
  for c in ctl1 ctl2 ctl3; do
    stop_bg "backend-$c" TERM 5
    rm -f "$LAB_TMP/backend-$c.ready"
    if ((${#ports[@]})); then
      start_bg "backend-$c" "$c" "$BACKEND" --name "$c" --address "${NODE_IP[$c]}" --ports "$(IFS=,; echo "${ports[*]}")" \
        --ready-file "$LAB_TMP/backend-$c.ready"
    else
      start_bg "backend-$c" "$c" "$BACKEND" --name "$c" --address "${NODE_IP[$c]}" --ready-file "$LAB_TMP/backend-$c.ready"
    fi
  done
  for c in ctl1 ctl2 ctl3; do
    wait_for 10 "backend $c" test -e "$LAB_TMP/backend-$c.ready" || die "backend $c did not start"
  done
}

soak_redis() { # start|stop: redis-server on every controller's address (no persistence to disk)
  local c
  for c in ctl1 ctl2 ctl3; do
    if [[ $1 == start ]]; then
      start_bg "redis-$c" "$c" redis-server --bind "${NODE_IP[$c]}" --port "$SOAK_REDIS_PORT" --save "" \
        --appendonly no --protected-mode no --daemonize no --dir "$LAB_TMP" --dbfilename "redis-$c.rdb"
    else
      stop_bg "redis-$c" TERM 5
    fi
  done
  if [[ $1 == start ]]; then
    for c in ctl1 ctl2 ctl3; do
      wait_for 10 "redis on $c" nsx "$c" redis-cli -h "${NODE_IP[$c]}" -p "$SOAK_REDIS_PORT" ping ||
        die "redis-server did not start on $c"
    done
  fi
}
redis_serves() { nsx client redis-cli -h "$VIP" -p "$SOAK_REDIS_PORT" ping | grep -q PONG; }

# The load loops run in the client namespace until their stop file appears (bounded by a deadline too); each run
# is one JSON line with its start and end (epoch ms) and its errors.
soak_load_start() { # DEADLINE_S
  local deadline=$1
  cat >"$LAB_TMP/soak-wrk.lua" <<EOF
function delay() return $SOAK_WRK_DELAY_MS end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
  cat >"$LAB_TMP/soak-wrk.sh" <<EOF
end=\$((SECONDS + $deadline))
while [[ ! -e $LAB_TMP/soak-load.stop ]] && ((SECONDS < end)); do
  s=\$EPOCHREALTIME
  out=\$(timeout 10 wrk -t1 -c4 -d1s --timeout 1s -s $LAB_TMP/soak-wrk.lua http://$VIP:80/ 2>&1 | grep '^{"requests"')
  rc=\$?
  e=\$EPOCHREALTIME
  echo "{\"start\":\${s/./},\"end\":\${e/./},\"rc\":\$rc,\"wrk\":\${out:-null}}"
done
EOF
  cat >"$LAB_TMP/soak-redis.sh" <<EOF
end=\$((SECONDS + $deadline))
while [[ ! -e $LAB_TMP/soak-load.stop ]] && ((SECONDS < end)); do
  s=\$EPOCHREALTIME
  out=\$(timeout 10 redis-benchmark -h $VIP -p $SOAK_REDIS_PORT $SOAK_REDIS_ARGS -q 2>&1)
  rc=\$?
  e=\$EPOCHREALTIME
  err=\$(tr '\r' '\n' <<<"\$out" | grep -iE 'error|could not|refused|reset' | head -n 1 | tr -d '"\\\\')
  echo "{\"start\":\${s/./},\"end\":\${e/./},\"rc\":\$rc,\"error\":\"\$err\"}"
  sleep 0.05
done
EOF
  rm -f "$LAB_TMP/soak-load.stop"
  start_bg soak-wrk client bash "$LAB_TMP/soak-wrk.sh"
  start_bg soak-redis client bash "$LAB_TMP/soak-redis.sh"
}
soak_load_stop() {
  touch "$LAB_TMP/soak-load.stop"
  wait_for 15 "the load loops to finish" eval '! alive soak-wrk && ! alive soak-redis' || true
  stop_bg soak-wrk TERM 2; stop_bg soak-redis TERM 2
}

# The sampler: every SOAK_SAMPLE_S seconds, per LB node: epoch ms, node, pid, VmRSS kB, open files, VIP held (1/0),
# CPU ticks so far, the machine's 1-minute load average, the share of the last 10 s in which every task waited for
# I/O (/proc/pressure/io "full avg10", % ; - without PSI), and how many of the open files are TCP connections (client,
# server, health check, sync: `ss state connected` owned by the process): the rest is what a leak would grow.
io_full() { awk '/^full/ { sub("avg10=", "", $2); print $2; f = 1 } END { if (!f) print "-" }' /proc/pressure/io 2>/dev/null || echo -; }
soak_sampler() { # DEADLINE_S
  local end=$((SECONDS + $1)) n p rss fds held conns
  while [[ ! -e $LAB_TMP/soak-sampler.stop ]] && ((SECONDS < end)); do
    for n in lb1 lb2; do
      p=$(pid_of "tandem-$n")
      pid_alive "$p" || continue
      rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
      fds=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
      held=0; vip_on "$n" && held=1
      conns=$(nsx "$n" ss -Htnp state connected 2>/dev/null | grep -c "pid=$p,") || true
      echo "$(now_ms) $n $p ${rss:-0} $fds $held $(proc_ticks "$p") $(cut -d' ' -f1 /proc/loadavg) $(io_full) ${conns:-0}"
    done
    sleep "$SOAK_SAMPLE_S"
  done >>"$LAB_TMP/soak-samples.txt"
}

# The stall watch: a loop at the daemons' own (normal) priority that sleeps 10 ms at a time and writes
# "START_MS LATE_MS" whenever it woke SOAK_STALL_MS or more late: the machine did not run it (the lab shares 2 cores
# with other jobs, some of them CPU hogs). A client error outside the failover windows during such a stall is
# reported apart (`*_outside_windows_in_stalls`) from the others.
soak_stall_watch() { # DEADLINE_S
  local end=$((SECONDS + $1)) prev now late fd
  exec {fd}<> <(:)
  prev=${EPOCHREALTIME/./}
  while [[ ! -e $LAB_TMP/soak-sampler.stop ]] && ((SECONDS < end)); do
    read -r -t 0.01 -u "$fd" _ || true
    now=${EPOCHREALTIME/./}
    late=$(((now - prev) / 1000 - 10))
    ((late < SOAK_STALL_MS)) || echo "$((prev / 1000)) $late"
    prev=$now
  done >>"$LAB_TMP/soak-stalls.txt"
}

nft_drop_all() { # NODE: the host goes silent on its LAN interface (a host crash as the peer sees it)
  nsx "$1" nft -f - <<EOF
table inet tnd {
  chain in { type filter hook input priority 0; iifname "eth0" drop; }
  chain out { type filter hook output priority 0; oifname "eth0" drop; }
}
EOF
}

# soak_event KIND: run one failover; prints "FROM TO T0 AUTO" (AUTO 1: the move follows a restart, not a command)
soak_event() {
  local kind=$1 pid t0
  case $kind in
    crash | host-crash | clean-stop)
      pid=$(pid_of tandem-lb1)
      [[ $kind == host-crash ]] && nft_drop_all lb1
      stamp t0
      if [[ $kind == clean-stop ]]; then kill -TERM "$pid"; else kill -KILL "$pid"; fi
      echo "lb1 lb2 $t0 0"
      ;;
    failback)
      nft_restore lb1
      stamp t0
      td_start lb1
      echo "lb2 lb1 $t0 1"
      ;;
    takeover-lb2 | takeover-lb1)
      local to=${kind#takeover-} from=lb1
      [[ $to == lb1 ]] && from=lb2
      stamp t0
      td_cli "$to" takeover >&2 || log "tandem takeover on $to failed"
      echo "$from $to $t0 0"
      ;;
  esac
}

drill_soak() {
  local interval=$1 dead=$2 secs n slot_ms i kind from to t0 auto t_start t_end due now deadline moved=0 out
  secs=$SOAK_S n=$SOAK_FAILOVERS
  if ((SHORT)); then secs=$SOAK_SHORT_S n=$SOAK_SHORT_FAILOVERS; fi
  slot_ms=$((secs * 1000 / n))
  deadline=$((secs + 120))
  # the drill runs in its own subshell: however it ends, the loops stop and the redis-servers go
  trap 'touch "$LAB_TMP/soak-load.stop" "$LAB_TMP/soak-sampler.stop"; soak_redis stop; soak_backends all' EXIT
  soak_backends without-redis
  soak_redis start
  td_pair "$interval" "$dead" auto_failback=true
  PROBE_MODE=http wait_for 15 "horizon through the VIP" vip_serves 80 || VIOL+=("horizon never answered")
  wait_for 15 "redis through the VIP" redis_serves || VIOL+=("redis never answered through the VIP")
  : >"$LAB_TMP/soak-events.txt"
  : >"$LAB_TMP/soak-samples.txt"
  watch_start
  # an attempt fails when refused, reset, answered wrongly or not answered within SOAK_PROBE_TIMEOUT_MS (as wrk's
  # --timeout 1s): a slow answer on a busy machine is not a client error; start times still place failures to 10 ms
  PROBE_TIMEOUT_MS=$SOAK_PROBE_TIMEOUT_MS PROBE_DURATION_MS=$((deadline * 1000)) probe_start probe 80 --mode http
  PROBE_TIMEOUT_MS=$SOAK_PROBE_TIMEOUT_MS PROBE_DURATION_MS=$((deadline * 1000)) \
    probe_start stick 6080 --sources "$CLIENT_SOURCES" --source-map
  soak_load_start "$deadline"
  rm -f "$LAB_TMP/soak-sampler.stop"
  : >"$LAB_TMP/soak-stalls.txt"
  soak_sampler "$deadline" &
  echo $! >"$LAB_TMP/soak-sampler.pid"
  soak_stall_watch "$deadline" &
  echo $! >"$LAB_TMP/soak-stall-watch.pid"
  stamp t_start
  log "soak: $secs s, $n failovers, one every $slot_ms ms"
  for ((i = 0; i < n; i++)); do
    due=$(calc "$t_start + ($i + 0.5) * $slot_ms")
    now=$(now_ms)
    calc_le "$due" "$now" || sleep "$(calc "($due - $now) / 1000")"
    kind=${SOAK_CYCLE[i % ${#SOAK_CYCLE[@]}]}
    read -r from to t0 auto < <(soak_event "$kind")
    log "soak: failover $((i + 1))/$n: $kind ($from -> $to)"
    if watch_wait "$to" present "$t0" 30; then moved=$((moved + 1)); else VIOL+=("failover $((i + 1)) ($kind): the VIP never reached $to"); fi
    echo "$i $kind $from $to $t0 $auto" >>"$LAB_TMP/soak-events.txt"
  done
  due=$(calc "$t_start + $secs * 1000")
  now=$(now_ms)
  calc_le "$due" "$now" || sleep "$(calc "($due - $now) / 1000")"
  stamp t_end
  soak_load_stop
  touch "$LAB_TMP/soak-sampler.stop"
  stop_bg soak-sampler TERM 5
  stop_bg soak-stall-watch TERM 5
  STICK=$(probe_stop stick)
  instruments_stop
  watch_stop
  td_wait_state lb1 active 10 || VIOL+=("lb1 is $(td_state lb1) at the end, want active")
  td_wait_state lb2 standby 10 || VIOL+=("lb2 is $(td_state lb2) at the end, want standby")
  local e1 e2
  e1=$(td_table_entries lb1 nova_novncproxy); e2=$(td_table_entries lb2 nova_novncproxy)
  out=$(soak_analyse "$t_start" "$t_end")
  R+=(soak_s:="$secs" failovers:="$n" failovers_moved:="$moved" stick_entries_active:="$(json_num "$e1")"
    stick_entries_standby:="$(json_num "$e2")" stick_probe:="$(cat "$STICK" 2>/dev/null || echo null)" soak:="$out")
  bound_eq failovers_moved "$moved" "$n"
  local f
  for f in wrk_errors_outside_windows_unexplained redis_errors_outside_windows_unexplained \
    probe_failures_outside_windows_unexplained stick_failures_outside_windows_unexplained split_brain_episodes; do
    bound_eq "$f" "$("$JSON" get "$f" <<<"$out" 2>/dev/null)" 0
  done
  bound_le stale_vip_overlap_longest_ms "$("$JSON" get stale_vip_overlap_longest_ms <<<"$out" 2>/dev/null)" 100
  bound_eq lost_stick_entries "$("$JSON" get sources_changed_controller "$STICK" 2>/dev/null)" 0
  bound_eq stick_entries_standby "$e2" "$e1"
  bound_eq stick_sources_seen "$("$JSON" get sources_seen "$STICK" 2>/dev/null)" "$e1"
  if ((secs >= SOAK_FLAT_MIN_S)); then # a short run is mostly warm-up: its memory figures are reported only
    bound_le lb2_rss_growth_pct "$("$JSON" get lb2.rss_growth_pct <<<"$out" 2>/dev/null)" 5
    bound_le lb2_fds_growth_pct "$("$JSON" get lb2.fds_growth_pct <<<"$out" 2>/dev/null)" 5
  fi
  calc_le 1 "$("$JSON" get wrk_requests <<<"$out" 2>/dev/null || echo 0)" || VIOL+=("wrk made no request")
  calc_le 1 "$("$JSON" get redis_runs_ok <<<"$out" 2>/dev/null || echo 0)" || VIOL+=("no redis-benchmark run succeeded")
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit soak tandem "$interval" "$dead" "" "$SUMMARY" "$(vip_holders)" null
}

# soak_analyse T_START T_END: the run's figures as one JSON object (windows, errors inside/outside, split brain,
# memory and files)
soak_analyse() {
  python3 - "$LAB_TMP" "$1" "$2" "$SOAK_TAIL_MS" <<'EOF'
import json, os, statistics, sys
tmp, t_start, t_end, tail = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])

def lines(name):
    path = os.path.join(tmp, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l for l in f.read().splitlines() if l.strip()]

def jsonl(name):
    out = []
    for l in lines(name):
        try:
            out.append(json.loads(l))
        except ValueError:
            pass
    return out

watch = {n: [(float(e["at_ms"]), bool(e["present"])) for e in jsonl(f"watch-{n}.log")] for n in ("lb1", "lb2")}
def first(node, present, t):
    return next((at for at, p in watch[node] if p == present and at >= t), None)

# windows: event (or the VIP's first move, for an automatic failback) .. new holder present + tail
windows, moves = [], []
for l in lines("soak-events.txt"):
    i, kind, frm, to, t0, auto = l.split()
    t0 = float(t0)
    t_new, t_gone = first(to, True, t0), first(frm, False, t0)
    start = t0
    if auto == "1":
        # the watchers poll every 1 ms and the new holder announces as it adds the VIP: an attempt reset by the
        # move can end before the watcher sees it (a run at 00:17 UTC: 0.4 ms before), hence 5 ms of slack
        start = min(x for x in (t_new, t_gone, t0 + 60000) if x is not None) - 5
    end = max(x for x in (t_new, t_gone, t0) if x is not None) + tail
    windows.append((start, end))
    moves.append({"n": int(i) + 1, "kind": kind, "to": to,
                  "takeover_ms": round(t_new - t0, 1) if t_new else None,
                  "gone_from_old_ms": round(t_gone - t0, 1) if t_gone else None,
                  "window_ms": round(end - start, 1)})

def inside(s, e):
    return any(s <= we and e >= ws for ws, we in windows)

# stalls of the normal-priority watch loop: [start - 200 ms, start + late + tail] covers what they delayed
stalls = []
for l in lines("soak-stalls.txt"):
    at, late = l.split()
    stalls.append((float(at) - 200, float(at) + float(late) + tail, float(late)))
def in_stall(s, e):
    return any(s <= se and e >= ss for ss, se, _ in stalls)

res = {"windows": len(windows), "tail_ms": tail, "moves": moves, "stalls": len(stalls),
       "stall_longest_ms": max((x[2] for x in stalls), default=0), "stall_total_ms": round(sum(x[2] for x in stalls)),
       "stalls_at_ms": [[round(x[0] + 200), x[2]] for x in sorted(stalls, key=lambda x: -x[2])[:10]]}
# the probes: every failed attempt (start..end, us) must overlap a window
for name, key in (("probe.events", "probe"), ("stick.events", "stick")):
    fails = [a for a in jsonl(name) if not a.get("ok")]
    out = [a for a in fails if not inside(a["start_us"] / 1000, a["end_us"] / 1000)]
    res[f"{key}_failures_in_windows"] = len(fails) - len(out)
    res[f"{key}_failures_outside_windows"] = len(out)
    res[f"{key}_failures_outside_windows_in_stalls"] = sum(1 for a in out if in_stall(a["start_us"] / 1000, a["end_us"] / 1000))
    res[f"{key}_failures_outside_windows_unexplained"] = len(out) - res[f"{key}_failures_outside_windows_in_stalls"]
    res[f"{key}_failures_outside_at_ms"] = [round(a["start_us"] / 1000, 1) for a in out[:20]]

# wrk: 1 s chunks; a chunk with errors must overlap a window
chunks = jsonl("soak-wrk.log")
werr = lambda c: (sum(c["wrk"][k] for k in ("connect", "read", "write", "status", "timeout")) if c.get("wrk") else 1)
bad = [c for c in chunks if werr(c) > 0]
out = [c for c in bad if not inside(c["start"] / 1000, c["end"] / 1000)]
res.update(wrk_chunks=len(chunks), wrk_requests=sum(c["wrk"]["requests"] for c in chunks if c.get("wrk")),
           wrk_errors=sum(werr(c) for c in bad), wrk_error_chunks=len(bad),
           wrk_errors_outside_windows=sum(werr(c) for c in out),
           wrk_errors_outside_windows_in_stalls=sum(werr(c) for c in out if in_stall(c["start"] / 1000, c["end"] / 1000)),
           wrk_errors_outside_windows_unexplained=sum(werr(c) for c in out if not in_stall(c["start"] / 1000, c["end"] / 1000)),
           wrk_error_chunks_outside_at_ms=[round(c["start"] / 1000, 1) for c in out[:20]])
# redis-benchmark: short runs, each stopped by its first error; a failed run must overlap a window
runs = jsonl("soak-redis.log")
bad = [r for r in runs if r["rc"] != 0 or r.get("error")]
out = [r for r in bad if not inside(r["start"] / 1000, r["end"] / 1000)]
res.update(redis_runs=len(runs), redis_runs_ok=len(runs) - len(bad), redis_runs_failed=len(bad),
           redis_errors_outside_windows=len(out),
           redis_errors_outside_windows_in_stalls=sum(1 for r in out if in_stall(r["start"] / 1000, r["end"] / 1000)),
           redis_errors_outside_windows_unexplained=sum(1 for r in out if not in_stall(r["start"] / 1000, r["end"] / 1000)),
           redis_longest_run_ms=round(max((r["end"] - r["start"]) / 1000 for r in runs), 1) if runs else None,
           redis_errors_outside=[{"at_ms": round(r["end"] / 1000, 1), "rc": r["rc"], "error": r.get("error")} for r in out[:20]],
           redis_error_kinds=sorted({(r.get("error") or f"exit {r['rc']}")[:60] for r in bad})[:10])

# split brain: both watchers saying present at once, for 1 ms or more. An overlap that starts within 1 s after a
# (host) crash of lb1 is not one: lb1's daemon is dead and its VIP guardian is removing the address (the stale-vip
# drill bounds that at 100 ms); it is counted apart as a stale-VIP overlap.
kills = [float(l.split()[4]) for l in lines("soak-events.txt") if l.split()[1] in ("crash", "host-crash")]
# A planned handover (clean stop, takeover, failback) is make-before-break (docs/protocol.md, "Clean handover"): an
# overlap that starts within 5 s after such an event (a failback waits for its servers) and lasts at most the
# design's bound (max(interval, 20) + max(dead, 250) ms, + 10 for the watchers) is planned, counted apart.
planned_events = [float(l.split()[4]) for l in lines("soak-events.txt") if l.split()[1] not in ("crash", "host-crash")]
PLANNED_BOUND_MS = float(os.environ.get("SOAK_PLANNED_OVERLAP_MS", "1210"))
planned, planned_longest = 0, 0.0
events = sorted([(at, 0, p) for at, p in watch["lb1"]] + [(at, 1, p) for at, p in watch["lb2"]], key=lambda e: (e[0], e[2]))
held, since, episodes, longest, stale, stale_longest = [False, False], None, 0, 0.0, 0, 0.0
for at, node, p in events:
    held[node] = p
    if held[0] and held[1] and since is None:
        since = at
    elif not (held[0] and held[1]) and since is not None:
        if any(k <= since <= k + 1000 for k in kills):
            stale += 1
            stale_longest = max(stale_longest, at - since)
        elif any(k <= since <= k + 5000 for k in planned_events) and at - since <= PLANNED_BOUND_MS:
            planned += 1
            planned_longest = max(planned_longest, at - since)
        else:
            if at - since >= 1.0:
                episodes += 1
            longest = max(longest, at - since)
        since = None
res.update(split_brain_episodes=episodes, both_holding_longest_ms=round(longest, 1),
           stale_vip_overlaps=stale, stale_vip_overlap_longest_ms=round(stale_longest, 1),
           planned_overlaps=planned, planned_overlap_longest_ms=round(planned_longest, 1))

# memory and open files per node and process
samples = []
for l in lines("soak-samples.txt"):
    t, node, pid, rss, fds, heldv, ticks, load, io, conns = l.split()
    samples.append((float(t), node, int(pid), int(rss), int(fds), heldv == "1", int(ticks), float(load),
                    float(io) if io != "-" else None, int(fds) - int(conns)))
dur = t_end - t_start
q1, q2, q4 = t_start + dur / 4, t_start + dur / 2, t_start + 3 * dur / 4
def growth(base, last, pick=max):
    return round((pick(last) / pick(base) - 1) * 100, 2) if base and last else None
hz = os.sysconf("SC_CLK_TCK")
res["load_avg_max"] = max((x[7] for x in samples), default=None)
res["load_avg_median"] = statistics.median([x[7] for x in samples]) if samples else None
res["io_full_avg10_max_pct"] = max((x[8] for x in samples if x[8] is not None), default=None)
for node in ("lb1", "lb2"):
    s = [x for x in samples if x[1] == node]
    pids = sorted({x[2] for x in s}, key=lambda p: min(x[0] for x in s if x[2] == p))
    lifetimes = []
    for p in pids:
        ps = [x for x in s if x[2] == p]
        secs = (ps[-1][0] - ps[0][0]) / 1000
        lifetimes.append({"pid": p, "samples": len(ps), "s": round(secs, 1),
                          "cpu_pct": round((ps[-1][6] - ps[0][6]) / hz / secs * 100, 1) if secs > 0 else None,
                          "rss_kb_min": min(x[3] for x in ps), "rss_kb_max": max(x[3] for x in ps),
                          "fds_min": min(x[4] for x in ps), "fds_max": max(x[4] for x in ps)})
    d = {"processes": len(pids), "lifetimes": lifetimes[:40]}
    if len(pids) == 1 and s:
        base = [x for x in s if q1 <= x[0] < q2]
        last = [x for x in s if x[0] >= q4]
        d.update(samples=len(s),
                 rss_kb_warmup_max=max(x[3] for x in s if x[0] < q1) if any(x[0] < q1 for x in s) else None,
                 rss_kb_base_max=max((x[3] for x in base), default=None),
                 rss_kb_last_max=max((x[3] for x in last), default=None),
                 rss_growth_pct=growth([x[3] for x in base], [x[3] for x in last]),
                 fds_base_max=max((x[4] for x in base), default=None), fds_last_max=max((x[4] for x in last), default=None),
                 fds_max_growth_pct=growth([x[4] for x in base], [x[4] for x in last]),
                 fds_base_min=min((x[4] for x in base), default=None), fds_last_min=min((x[4] for x in last), default=None),
                 fds_min_growth_pct=growth([x[4] for x in base], [x[4] for x in last], min),
                 fds_no_conns_base_median=statistics.median([x[9] for x in base]) if base else None,
                 fds_no_conns_last_median=statistics.median([x[9] for x in last]) if last else None,
                 fds_growth_pct=growth([x[9] for x in base], [x[9] for x in last], statistics.median))
    res[node] = d
print(json.dumps(res))
EOF
}
