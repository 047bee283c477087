# shellcheck shell=bash
# handovers (issue 16): every planned handover is make-before-break, so no request meets a VIP on neither node.
# HANDOVER_REPS cycles (20; --short: 3, at 10/30 only) of the four planned handovers under one client probe (every
# HANDOVER_PROBE_MS, default the probe's 10 ms), on a pair with auto_failback on:
#   takeover   `tandem takeover` on lb2 (standby)        lb1 -> lb2
#   release    `tandem release` on lb2 (active)          lb2 -> lb1
#   clean-stop SIGTERM of lb1 (active)                   lb1 -> lb2
#   failback   lb1 started again, caught up: takes back  lb2 -> lb1
# After each: the new holder active, the old one standby (or exited), exactly 1 VIP holder. Over the run: every
# overlap (both_holding_ms: both nodes held the VIP) within handover_overlap_bound, no gap (vip_gap_ms: neither
# node held it) beyond the watchers' resolution (1 ms). A failed attempt is either a reset of an attempt in flight
# at the switch (inflight_resets: its connection was made to the old holder, and after the new holder's
# announcement the client's next packets went to the new one, whose kernel resets them; no move of an address
# without connection state avoids it) or anything else (gap_failures: a SYN that found no holder, the loss
# make-before-break removes). Asserted: gap_failures = 0 and inflight_resets <= handovers (the probe has about one
# attempt in flight at a time). Figures per kind: median and range of takeover_ms (command or signal -> VIP on the
# new node; failback: from lb1's start, it waits for its servers), both_holding_ms and vip_gap_ms. Sourced by
# netns-tests/drill.

TANDEM_DRILLS+=(handovers)
variants_handovers() {
  echo "10 30"
  [[ $SHORT == 1 ]] || echo "200 1000"
}
HANDOVER_REPS=${HANDOVER_REPS:-20}
HANDOVER_REPS_SHORT=${HANDOVER_REPS_SHORT:-3}
HANDOVER_GAP_LIMIT_MS=${HANDOVER_GAP_LIMIT_MS:-1}

# ho_one KIND OLD NEW INTERVAL: one planned handover, its figures appended to $LAB_TMP/ho-figures.jsonl
ho_one() {
  local kind=$1 old=$2 new=$3 interval=$4 t0 at pid holders
  stamp t0
  case $kind in
    takeover) td_cli lb2 takeover >&2 || VIOL+=("$kind: tandem takeover failed") ;;
    release) td_cli lb2 release >&2 || VIOL+=("$kind: tandem release failed") ;;
    clean-stop) pid=$(pid_of tandem-lb1); kill -TERM "$pid" ;;
    failback) td_start lb1 ;;
  esac
  watch_wait "$new" present "$t0" 30 || VIOL+=("$kind: the VIP never reached $new")
  watch_wait "$old" absent "$t0" 10 || VIOL+=("$kind: the VIP never left $old")
  td_wait_state "$new" active 10 || VIOL+=("$kind: $new is $(td_state_said "$new"), want active")
  if [[ $kind == clean-stop ]]; then
    wait_for 10 "lb1 exit" pid_gone "$pid" || VIOL+=("$kind: lb1 did not exit on SIGTERM")
  else
    td_wait_state "$old" standby 10 || VIOL+=("$kind: $old is $(td_state_said "$old"), want standby")
  fi
  holders=$(vip_holders)
  at=$(watch_first "$new" present "$t0")
  handover_figures "$old" "$new" "$t0"
  "$JSON" obj kind="$kind" takeover_ms:="$(json_num "$(diff_ms "$at" "$t0")")" both_holding_ms:="$HO_BOTH" \
    vip_gap_ms:="$HO_GAP" holders_after:="$holders" switch_at_ms:="$(json_num "$at")" >>"$LAB_TMP/ho-figures.jsonl"
  HO_SWITCHES+=("$at")
  [[ $holders == 1 ]] || VIOL+=("$kind: $holders VIP holders after the handover")
  # a quiet moment between handovers: the probe sees any late failure, the pair its steady state
  sleep "$(awk -v i="$interval" 'BEGIN { s = 3 * i / 1000; if (s < 0.2) s = 0.2; print s }')"
}

# ho_summary FILE BOUND_MS GAP_LIMIT_MS: per kind and overall, median/min/max of each figure, as JSON fields for R
ho_summary() {
  python3 - "$@" <<'EOF'
import json, statistics, sys
path, bound, gap_limit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = [json.loads(l) for l in open(path) if l.strip()]
out = {}
def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 1), "min": min(values), "max": max(values), "n": len(values)}
for kind in ["takeover", "release", "clean-stop", "failback"]:
    mine = [r for r in rows if r["kind"] == kind]
    out[kind.replace("-", "_")] = {f: stats([r.get(f) for r in mine]) for f in ("takeover_ms", "both_holding_ms", "vip_gap_ms")}
both = [r["both_holding_ms"] for r in rows if r.get("both_holding_ms") is not None]
gaps = [r["vip_gap_ms"] for r in rows if r.get("vip_gap_ms") is not None]
out["handovers_done"] = len(rows)
out["max_both_holding_ms"] = max(both) if both else None
out["max_vip_gap_ms"] = max(gaps) if gaps else None
out["overlaps_over_bound"] = sum(1 for b in both if b > bound)
out["gaps_over_limit"] = sum(1 for g in gaps if g > gap_limit)
out["missing_figures"] = len(rows) - min(len(both), len(gaps))
out["holders_not_1"] = sum(1 for r in rows if r.get("holders_after") != 1)
for k, v in out.items():
    print(f"{k}:={json.dumps(v)}")
EOF
}

drill_handovers() {
  local interval=$1 dead=$2 reps=$HANDOVER_REPS rep bound f fields inflight other
  HO_SWITCHES=()
  ((SHORT)) && reps=$HANDOVER_REPS_SHORT
  : >"$LAB_TMP/ho-figures.jsonl"
  # HANDOVER_DRAIN_MS sets [heartbeat] handover_drain_ms (unset: the default, 500): 0 turns the drain off and shows
  # the in-flight resets it removes
  td_pair "$interval" "$dead" auto_failback=true ${HANDOVER_DRAIN_MS:+handover_drain_ms=$HANDOVER_DRAIN_MS} ||
    VIOL+=("the pair did not settle")
  # lb1 is caught up (stick tables, config) before the first cycle: a failback waits for that
  WAIT_STEP=0.1 wait_for 20 "lb1 caught up" eval '[[ $(td_status_json lb1 | "$JSON" get replication.caught_up 2>/dev/null) == true ]]' || true
  watch_start
  PROBE_INTERVAL_MS=${HANDOVER_PROBE_MS:-${PROBE_INTERVAL_MS:-10}} probe_start probe "$PROBE_PORT" --mode "$PROBE_MODE"
  arp_capture_start # the announcements' arrival times: when the client's path moved (probe_failure_split)
  sleep 0.2
  for ((rep = 1; rep <= reps; rep++)); do
    log "handovers: cycle $rep of $reps"
    ho_one takeover lb1 lb2 "$interval"
    ho_one release lb2 lb1 "$interval"
    ho_one clean-stop lb1 lb2 "$interval"
    ho_one failback lb2 lb1 "$interval"
    ((${#VIOL[@]} == 0)) || break # a broken cycle leaves the pair in an unknown place: stop here
  done
  settle "$interval"
  SUMMARY=$(probe_stop probe)
  arp_capture_stop
  watch_stop
  bound=$(handover_overlap_bound "$interval" "$dead")
  mapfile -t fields < <(ho_summary "$LAB_TMP/ho-figures.jsonl" "$bound" "$HANDOVER_GAP_LIMIT_MS")
  R+=(reps:="$reps" probe_interval_ms:="${HANDOVER_PROBE_MS:-${PROBE_INTERVAL_MS:-10}}" overlap_bound_ms:="$bound"
    vip_gap_limit_ms:="$HANDOVER_GAP_LIMIT_MS" "${fields[@]}")
  for f in "${fields[@]}"; do
    case $f in
      handovers_done:=*) bound_eq handovers_done "${f#*=}" $((4 * reps)) ;;
      overlaps_over_bound:=* | gaps_over_limit:=* | missing_figures:=* | holders_not_1:=*) bound_eq "${f%%:=*}" "${f#*=}" 0 ;;
    esac
  done
  read -r inflight other < <(ANNOUNCED_MS=$(arp_announcement_times) probe_failure_split "$LAB_TMP/probe.events" "${HO_SWITCHES[@]}")
  R+=(inflight_resets:="$inflight" gap_failures:="$other")
  bound_eq gap_failures "$other" 0
  # with the drain (the default) a request in flight at the switch finishes on the old holder: none may fail
  if [[ ${HANDOVER_DRAIN_MS:-} == 0 ]]; then
    bound_le inflight_resets "$inflight" "${#HO_SWITCHES[@]}"
  else
    bound_eq inflight_resets "$inflight" 0
  fi
  bound_eq vip_holders_after "$(vip_holders)" 1
  GARP_UPDATED=null
  emit handovers tandem "$interval" "$dead" "" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}
