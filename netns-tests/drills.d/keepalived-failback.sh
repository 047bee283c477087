# shellcheck shell=bash
# keepalived-failback (issue 16's comparison for `failback`): keepalived + HAProxy at advert 1 / 0.1 / 0.01 s. lb1
# (MASTER, priority 150) stops cleanly (keepalived SIGTERM: priority 0, VIP dropped; HAProxy soft stop), lb2 takes
# the VIP; then lb1's HAProxy and keepalived start again and lb1 preempts (keepalived's default), as tandem's
# auto_failback takes back. Timed from lb1's keepalived start: takeover_ms (VIP on lb1), both_holding_ms /
# vip_gap_ms (whether the move left the VIP on both or on neither), the client's outage and failed requests, split
# into resets of attempts in flight at the switch and other failures (`handover_bounds`' split). Only 1 holder
# after is asserted: this is the reference the `failback` drill is read against. Sourced by netns-tests/drill.

KEEPALIVED_DRILLS+=(keepalived-failback)

drill_keepalived_failback() {
  local advert=$1 interval dead t0 at inflight other
  read -r interval dead < <(ka_times "$advert")
  ka_pair "$advert"
  ka_kill lb1 TERM
  wait_for 15 "keepalived: VIP on lb2" vip_only lb2 || VIOL+=("lb2 never took over after lb1 stopped")
  ka_stop lb1
  stop_bg "haproxy-lb1" KILL 2
  instruments_start lb2
  haproxy_start lb1
  stamp t0
  ka_start lb1 "$advert"
  watch_wait lb1 present "$t0" 30 || VIOL+=("lb1 never took the VIP back")
  settle "$interval"
  instruments_stop
  at=$(watch_first lb1 present "$t0")
  garp_check lb1 "$t0"
  handover_figures lb2 lb1 "$t0"
  read -r inflight other < <(probe_failure_split "$LAB_TMP/probe.events" "$at")
  R+=(advert_int_s:="$advert" inflight_resets:="$inflight" gap_failures:="$other" dataplane=haproxy)
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit keepalived-failback keepalived "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}
