# shellcheck shell=bash
# heartbeat-loss (issue 16): random loss on the heartbeat only. An nft rule in the active node's (lb1's) namespace
# drops HL_LOSS_PCT (30) % of UDP 6694 in each direction (`numgen random mod 100 < N`, counted), for HL_S (60) s
# (--short: HL_SHORT_S, 10), while the client probe runs. Nothing may move: 0 VIP changes on either node (tnd-watch),
# 0 role changes (takeovers + releases in both nodes' status), no failed request, lb1 active and lb2 standby after.
# Figures: the loss the rule really applied each way (nft counters), the warnings (silence > warn_ms) each node counted.
#
# HL_SWEEP="30 50 70 80 90" adds a sweep (a figure, not a bound): at each timing of HL_SWEEP_TIMINGS ("200 1000,10 30")
# and each loss rate, for HL_SWEEP_S (30) s, on a fresh pair, how long until the first false failover (lb2 takes the
# VIP while lb1 lives), one result line each (`heartbeat-loss-sweep`, always ok). Sourced by netns-tests/drill.

TANDEM_DRILLS+=(heartbeat-loss)
variants_heartbeat_loss() { echo "200 1000"; } # the bound is for the defaults; 10/30 is in the sweep
HL_LOSS_PCT=${HL_LOSS_PCT:-30}
HL_S=${HL_S:-60}
HL_SHORT_S=${HL_SHORT_S:-10}
HL_SWEEP=${HL_SWEEP:-}
HL_SWEEP_S=${HL_SWEEP_S:-30}
HL_SWEEP_TIMINGS=${HL_SWEEP_TIMINGS:-200 1000,10 30}

# hl_drop NODE PCT: drop PCT % of UDP 6694 each way in NODE's namespace; every datagram is counted, the dropped ones too
hl_drop() {
  nsx "$1" nft -f - <<EOF
table inet tnd {
  chain in { type filter hook input priority 0; udp dport 6694 counter jump hl_in; }
  chain hl_in { numgen random mod 100 < $2 counter drop; }
  chain out { type filter hook output priority 0; udp dport 6694 counter jump hl_out; }
  chain hl_out { numgen random mod 100 < $2 counter drop; }
}
EOF
}
# hl_counts NODE CHAIN: "SEEN DROPPED" from the rule's counters
hl_counts() {
  local seen dropped
  seen=$(nsx "$1" nft list chain inet tnd "$2" 2>/dev/null | awk '/counter packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }' | head -n 1)
  dropped=$(nsx "$1" nft list chain inet tnd "hl_$2" 2>/dev/null | awk '/counter packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }' | head -n 1)
  echo "${seen:-0} ${dropped:-0}"
}
hl_pct() { awk -v s="$1" -v d="$2" 'BEGIN { printf "%.1f", (s > 0 ? 100 * d / s : 0) }'; }
hl_warns() { td_status_json "$1" | "$JSON" get cluster.warn_time_exceeded 2>/dev/null || echo null; }

drill_heartbeat_loss() {
  local interval=$1 dead=$2 secs t0 m1 m2 w1 w2 seen_in drop_in seen_out drop_out rc=0 rate
  secs=$HL_S; ((SHORT)) && secs=$HL_SHORT_S
  td_pair "$interval" "$dead"
  watch_start
  probe_start probe "$PROBE_PORT" --mode "$PROBE_MODE"
  m1=$(role_moves lb1); m2=$(role_moves lb2); w1=$(hl_warns lb1); w2=$(hl_warns lb2)
  stamp t0
  hl_drop lb1 "$HL_LOSS_PCT"
  sleep "$secs"
  read -r seen_in drop_in < <(hl_counts lb1 in)
  read -r seen_out drop_out < <(hl_counts lb1 out)
  nft_restore lb1
  sleep "$(awk -v d="$dead" 'BEGIN { s = 2 * d / 1000; if (s < 0.5) s = 0.5; print s }')" # a late move shows too
  SUMMARY=$(probe_stop probe)
  watch_stop
  R+=(loss_pct:="$HL_LOSS_PCT" loss_s:="$secs" heartbeats_to_lb1:="$seen_in" dropped_to_lb1:="$drop_in"
    heartbeats_from_lb1:="$seen_out" dropped_from_lb1:="$drop_out"
    loss_applied_to_lb1_pct:="$(hl_pct "$seen_in" "$drop_in")" loss_applied_from_lb1_pct:="$(hl_pct "$seen_out" "$drop_out")"
    lb1_vip_changes:="$(watch_changes lb1 "$t0")" lb2_vip_changes:="$(watch_changes lb2 "$t0")"
    role_changes:="$(($(role_moves lb1) - m1 + $(role_moves lb2) - m2))"
    first_false_failover_ms:="$(diff_ms "$(watch_first lb2 present "$t0")" "$t0")"
    warn_time_exceeded_lb1:="$(($(hl_warns lb1) - w1))" warn_time_exceeded_lb2:="$(($(hl_warns lb2) - w2))"
    lb1_state="$(td_state lb1)" lb2_state="$(td_state lb2)")
  bound_eq lb1_vip_changes "$(watch_changes lb1 "$t0")" 0
  bound_eq lb2_vip_changes "$(watch_changes lb2 "$t0")" 0
  bound_eq role_changes "$(($(role_moves lb1) - m1 + $(role_moves lb2) - m2))" 0
  bound_eq failed_requests "$("$JSON" get failed_requests "$SUMMARY")" 0
  bound_eq lb1_state "$(td_state lb1)" active
  bound_eq lb2_state "$(td_state lb2)" standby
  calc_le "$((secs * 1000 / interval / 2))" "$seen_out" || VIOL+=("only $seen_out heartbeats left lb1 in $secs s: the rule saw too little traffic")
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit heartbeat-loss tandem "$interval" "$dead" "" "$SUMMARY" "$(vip_holders)" null || rc=1
  local timings=() v
  [[ -n $HL_SWEEP ]] && IFS=, read -r -a timings <<<"$HL_SWEEP_TIMINGS"
  for v in "${timings[@]}"; do
    for rate in $HL_SWEEP; do
      lab_reset
      R=(); VIOL=()
      # shellcheck disable=SC2086
      hl_sweep_one $v "$rate" || rc=1
    done
  done
  return "$rc"
}

# hl_sweep_one INTERVAL DEAD PCT: a fresh pair, PCT % loss each way at lb1 for HL_SWEEP_S s; figures only
hl_sweep_one() {
  local interval=$1 dead=$2 pct=$3 t0 first seen_out drop_out m2
  td_pair "$interval" "$dead"
  watch_start
  m2=$(role_moves lb2)
  stamp t0
  hl_drop lb1 "$pct"
  # bounded: stop early at the first false failover
  WAIT_STEP=0.05 wait_for "$HL_SWEEP_S" "a false failover at $pct % loss" watch_seen lb2 present "$t0" 2>/dev/null || true
  read -r seen_out drop_out < <(hl_counts lb1 out)
  nft_restore lb1
  watch_stop
  first=$(diff_ms "$(watch_first lb2 present "$t0")" "$t0")
  R+=(loss_pct:="$pct" observed_s:="$HL_SWEEP_S" first_false_failover_ms:="$first"
    false_failover:="$([[ $first == null ]] && echo false || echo true)"
    loss_applied_from_lb1_pct:="$(hl_pct "$seen_out" "$drop_out")" lb2_takeovers:="$(($(role_moves lb2) - m2))")
  emit heartbeat-loss-sweep tandem "$interval" "$dead" "$first" "$LAB_TMP/no-probe" "$(vip_holders)" null
}
