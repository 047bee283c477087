# shellcheck shell=bash
# both-restart (issue 16): both daemons stopped together and started together, BR_REPS (10) times (--short:
# BR_SHORT_REPS, 3), alternating SIGTERM (clean stop of both) and SIGKILL (both die; their VIP guardians remove the
# VIP). Each time both are started at once; the watchers run throughout.
# Bounds, per repetition: the VIP appears on exactly one node within init_dead_ms + interval_ms of the start
# (`first_holder_ms`), lb1 (the primary) ends active and lb2 standby; over the whole drill never both nodes holding
# the VIP (`split_brain_episodes` 0: overlaps of 1 ms or more, the watchers' resolution; `both_holding_ms` reports
# every overlap). Figures: first_holder_ms per repetition (median, max), which node took it first. Sourced by
# netns-tests/drill.

TANDEM_DRILLS+=(both-restart)
variants_both_restart() { # the defaults in --short, 10/30 too in the full run
  echo "200 1000"
  [[ $SHORT == 1 ]] || echo "10 30"
}
BR_REPS=${BR_REPS:-10}
BR_SHORT_REPS=${BR_SHORT_REPS:-3}
BR_INIT_DEAD_MS=3000 # the example's init_dead_ms, which td_configure keeps

# br_both_holding T0 [STOP_MS:START_MS ...]: "EPISODES TOTAL_MS STOP_OVERLAP_MS" during which both watchers saw the
# VIP since T0 (as rolling-upgrade's ru_both_holding: overlaps shorter than the watchers' 1 ms poll are the two
# watchers' clocks, not two holders). An overlap that begins while both are being stopped (a STOP_MS:START_MS
# window) is the make-before-break handover of two SIGTERMs crossing (the stopping active offers, the other takes
# the offer just before its own stop): reported as STOP_OVERLAP_MS (the longest) and bounded as a handover overlap,
# not counted as a split brain.
br_both_holding() {
  python3 - "$LAB_TMP/watch-lb1.log" "$LAB_TMP/watch-lb2.log" "$@" <<'EOF'
import json, sys
t0 = float(sys.argv[3])
stops = [tuple(float(x) for x in w.split(":")) for w in sys.argv[4:]]
events = []
for node, path in enumerate(sys.argv[1:3]):
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            events.append((float(e["at_ms"]), node, bool(e["present"])))
events.sort(key=lambda e: (e[0], e[2]))
held = [False, False]
episodes, total, since, stop_overlap = 0, 0.0, None, 0.0
for at, node, present in events:
    held[node] = present
    both = held[0] and held[1]
    if both and since is None:
        since = at
    elif not both and since is not None:
        if at >= t0:
            overlap = at - max(since, t0)
            total += overlap
            if any(a <= since <= b for a, b in stops):
                stop_overlap = max(stop_overlap, overlap)
            elif overlap >= 1.0:
                episodes += 1
        since = None
if since is not None:
    episodes += 1
print(episodes, round(total, 1), round(stop_overlap, 1))
EOF
}
br_first_holder() { # T: the node whose watcher saw the VIP first at or after T, and when ("NODE AT"), or "none"
  local a b
  a=$(watch_first lb1 present "$1"); b=$(watch_first lb2 present "$1")
  if [[ -n $a ]] && { [[ -z $b ]] || calc_le "$a" "$b"; }; then echo "lb1 $a"
  elif [[ -n $b ]]; then echo "lb2 $b"
  else echo none; fi
}
br_settled() { td_is lb1 active && td_is lb2 standby && vip_only lb1; }

drill_both_restart() {
  local interval=$1 dead=$2 reps i sig t0 t_stop t_start first at ms limit episodes total stop_overlap times=() firsts=()
  local stops=() bad=0 p1 p2
  reps=$BR_REPS; ((SHORT)) && reps=$BR_SHORT_REPS
  limit=$((BR_INIT_DEAD_MS + interval))
  td_pair "$interval" "$dead"
  watch_start
  stamp t0
  for ((i = 0; i < reps; i++)); do
    if ((i % 2)); then sig=KILL; else sig=TERM; fi
    p1=$(pid_of tandem-lb1); p2=$(pid_of tandem-lb2)
    stamp t_stop
    kill -"$sig" "$p1" "$p2" 2>/dev/null || true
    wait_for 10 "both daemons gone" eval "pid_gone $p1 && pid_gone $p2" || VIOL+=("rep $i: a daemon outlived SIG$sig")
    rm -f "$LAB_TMP/tandem-lb1.pid" "$LAB_TMP/tandem-lb2.pid"
    # the guardian (SIGKILL) or the daemon itself (SIGTERM) took the VIP away; nothing may hold it before the start
    wait_for 2 "VIP gone from both" eval '[[ $(vip_holders) == 0 ]]' || VIOL+=("rep $i: VIP left on $(vip_holder) after SIG$sig")
    sleep 0.05
    stamp t_start
    stops+=("$t_stop:$t_start")
    td_start lb1
    td_start lb2
    WAIT_STEP=0.05 wait_for $((limit / 1000 + 10)) "rep $i: a VIP holder" eval '[[ $(vip_holders) != 0 ]]' ||
      VIOL+=("rep $i (SIG$sig): no node took the VIP")
    read -r first at < <(br_first_holder "$t_start")
    ms=$(diff_ms "$at" "$t_start")
    times+=("$ms"); firsts+=("$first")
    calc_le "${ms//null/999999}" "$limit" || { VIOL+=("rep $i (SIG$sig): first holder after $ms ms > $limit"); bad=$((bad + 1)); }
    WAIT_STEP=0.1 wait_for 20 "rep $i: lb1 active, lb2 standby" br_settled ||
      VIOL+=("rep $i (SIG$sig): lb1 $(td_state lb1), lb2 $(td_state lb2), VIP on $(vip_holder)")
    sleep "$(awk -v i="$interval" 'BEGIN { s = 5 * i / 1000; if (s < 0.3) s = 0.3; print s }')" # a late move shows
  done
  watch_stop
  read -r episodes total stop_overlap < <(br_both_holding "$t0" "${stops[@]}")
  R+=(repetitions:="$i" first_holder_ms:="[$(IFS=,; echo "${times[*]}")]"
    first_holder:="[$(printf '"%s",' "${firsts[@]}" | sed 's/,$//')]"
    first_holder_median_ms:="$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : "null") }')"
    first_holder_max_ms:="$(printf '%s\n' "${times[@]}" | sort -n | tail -n 1)"
    bound_first_holder_ms:="$limit" split_brain_episodes:="$episodes" both_holding_ms:="$total"
    stop_overlap_ms:="$stop_overlap" stop_overlap_bound_ms:="$(handover_overlap_bound "$interval" "$dead")"
    lb1_vip_changes:="$(watch_changes lb1 "$t0")" lb2_vip_changes:="$(watch_changes lb2 "$t0")")
  bound_eq repetitions "$i" "$reps"
  bound_eq split_brain_episodes "$episodes" 0
  bound_le stop_overlap_ms "$stop_overlap" "$(handover_overlap_bound "$interval" "$dead")"
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit both-restart tandem "$interval" "$dead" "$(printf '%s\n' "${times[@]}" | sort -n | tail -n 1)" "$LAB_TMP/no-probe" "$(vip_holders)" null
}
