# shellcheck shell=bash
# stale-vip (issue 16): SIGKILL the active daemon (lb1); its VIP guardian (daemon/guardian.rs, a child forked at
# start that holds a pipe to the daemon) sees the pipe close and removes the VIP from lb1's interface, and the
# drain route of a drain cut short (put there by hand before the kill), right after the VIP. Bound: the
# VIP leaves lb1 within 100 ms of the kill (tnd-watch's ms timestamps), long before lb2 takes over. Then, with
# lb1's daemon still dead, the VIP is put back on lb1 by hand with a drain's leftovers (AnyIP route, nftables
# table), and `tandem release-vips` (the unit's ExecStopPost) must remove all three; lb1 is restarted and comes
# back standby. Sourced by netns-tests/drill.

TANDEM_DRILLS+=(stale-vip)
variants_stale_vip() {
  echo "10 30"
  [[ $SHORT == 1 ]] || echo "200 1000"
}

drill_stale_vip() {
  local interval=$1 dead=$2 t0 pid gone at released=false
  td_pair "$interval" "$dead"
  instruments_start lb1
  pid=$(pid_of tandem-lb1)
  # As a drain cut short would leave it: the guardian removes the AnyIP route right after the VIP
  ip -n "$(ns lb1)" route add local "$VIP/32" dev lo table local metric 7778 proto static 2>/dev/null || true
  stamp t0
  kill -KILL "$pid"
  watch_wait lb1 absent "$t0" 5 || VIOL+=("the VIP never left the dead lb1")
  local i
  for ((i = 0; i < 20; i++)); do # the route goes right after the VIP
    ip -n "$(ns lb1)" route show table local | grep -q "metric 7778" || break
    sleep 0.05
  done
  ((i < 20)) || VIOL+=("the VIP guardian left the drain route")
  watch_wait lb2 present "$t0" $((dead / 1000 + 10)) || VIOL+=("VIP never reached lb2")
  settle "$interval"
  instruments_stop
  gone=$(watch_first lb1 absent "$t0")
  at=$(watch_first lb2 present "$t0")
  garp_check lb2 "$t0"
  # ExecStopPost's backstop: a VIP left on the dead node is removed when no daemon of the node runs, with what a
  # drain cut short leaves (its AnyIP route, metric 7778 in the local table, and its nftables table)
  ip -n "$(ns lb1)" addr add "$VIP/32" dev eth0 2>/dev/null || true
  ip -n "$(ns lb1)" route add local "$VIP/32" dev lo table local metric 7778 proto static 2>/dev/null || true
  ip netns exec "$(ns lb1)" nft add table ip tandem_drain 2>/dev/null || true
  if td_cli lb1 release-vips >&2 && ! vip_on lb1; then released=true; fi
  if ip -n "$(ns lb1)" route show table local | grep -q "metric 7778"; then
    released=false
    VIOL+=("release-vips left the drain route")
  fi
  if ip netns exec "$(ns lb1)" nft list table ip tandem_drain >/dev/null 2>&1; then
    released=false
    VIOL+=("release-vips left the drain table")
  fi
  td_start lb1
  td_wait_state lb1 standby 20 || VIOL+=("restarted lb1 is $(td_state lb1), want standby")
  R+=(new_active=lb2 vip_gone_from_dead_ms:="$(diff_ms "$gone" "$t0")" release_vips_removed:="$released")
  bound_le vip_gone_from_dead_ms "$(diff_ms "$gone" "$t0")" 100
  bound_eq release_vips_removed "$released" true
  bound_eq garp_updated "$GARP_UPDATED" true
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit stale-vip tandem "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}
