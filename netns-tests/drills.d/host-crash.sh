# shellcheck shell=bash
# host-crash (issue 16): the active node's host dies. nftables in lb1's namespace drops everything on its interface,
# both ways, IP and ARP (a dead host answers nothing: no heartbeat, no FIN, no ICMP, no RST), then its daemon gets
# SIGKILL. lb2 hears nothing more and takes over after dead_ms (docs/protocol.md, "Process death": host death still
# takes dead_ms). lb1 being cut off, its VIP (removed by its guardian anyway) is out of the client's way: the
# client's frames to lb1's MAC are dropped until lb2's announcement moves it. Bound: client_outage_ms <= dead_ms +
# interval + 10 ms (the VIP add and the announcement), garp_updated, 1 holder. Then the rule is removed, lb1 restarted:
# it comes back standby, 1 holder. keepalived-host-crash is the same with keepalived + HAProxy (advert 1/0.1/0.01 s;
# master down = 3 adverts + skew). Both run their daemons at real-time priority (CRASH_RT_DAEMONS=1, see
# process-crash.sh). Sourced by netns-tests/drill.

TANDEM_DRILLS+=(host-crash)
KEEPALIVED_DRILLS+=(keepalived-host-crash)
variants_host_crash() {
  echo "10 30"
  [[ $SHORT == 1 ]] || echo "200 1000"
}

# nft_isolate NODE: drop every packet and ARP frame in and out of NODE's eth0 (tables `inet tnd_host`, `arp tnd_host`)
nft_isolate() {
  nsx "$1" nft -f - <<'EOF'
table inet tnd_host {
  chain in { type filter hook input priority -300; iifname "eth0" drop; }
  chain out { type filter hook output priority -300; oifname "eth0" drop; }
}
table arp tnd_host {
  chain in { type filter hook input priority 0; drop; }
  chain out { type filter hook output priority 0; drop; }
}
EOF
}
nft_unisolate() {
  nsx "$1" nft delete table inet tnd_host 2>/dev/null || true
  nsx "$1" nft delete table arp tnd_host 2>/dev/null || true
}

drill_host_crash() {
  local interval=$1 dead=$2 t0 t_nft pid at heard_lb1 gone LAB_RT_DAEMONS=${CRASH_RT_DAEMONS:-1}
  nft_unisolate lb1
  td_pair "$interval" "$dead"
  instruments_start lb1
  pid=$(pid_of tandem-lb1)
  # the host is dead once the rules are committed, before `nft` returns: timed from its return (nft_ms is its own
  # length, which under load reaches hundreds of ms)
  stamp t_nft
  nft_isolate lb1
  stamp t0
  kill -KILL "$pid"
  R+=(nft_ms:="$(diff_ms "$t0" "$t_nft")")
  watch_wait lb2 present "$t0" $((dead / 1000 + 10)) || VIOL+=("VIP never reached lb2")
  settle "$interval"
  instruments_stop
  at=$(watch_first lb2 present "$t0")
  garp_check lb2 "$t0"
  # a dead host sends nothing: lb2 must have given lb1 up for silence, never as a dead daemon on a live host
  gone=$(log_event_ms lb2 "peer's daemon gone" "$t0")
  R+=(new_active=lb2 detect_ms:="$(diff_ms "$(log_event_ms lb2 "peer declared dead" "$t0")" "$t0")"
    process_gone_reported:="$([[ -n $gone ]] && echo true || echo false)")
  bound_eq process_gone_reported "$([[ -n $gone ]] && echo true || echo false)" false
  nft_unisolate lb1
  td_start lb1
  td_wait_state lb1 standby 20 || VIOL+=("restarted lb1 is $(td_state lb1), want standby")
  heard_lb1=$(td_state lb1)
  R+=(restarted_old_state="$heard_lb1")
  bound_outage $((dead + interval + 10))
  bound_le takeover_ms "$(diff_ms "$at" "$t0")" $((dead + interval + 10))
  bound_eq garp_updated "$GARP_UPDATED" true
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit host-crash tandem "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}

# keepalived-host-crash ADVERT_S: the same isolation of lb1, then its HA stack (keepalived's VRRP child, its parent,
# HAProxy) gets SIGKILL; lb2's keepalived takes the VIP after the master down interval.
drill_keepalived_host_crash() {
  local advert=$1 interval dead t0 t_nft at LAB_RT_DAEMONS=${CRASH_RT_DAEMONS:-1}
  read -r interval dead < <(ka_times "$advert")
  nft_unisolate lb1
  ka_pair "$advert"
  instruments_start lb1
  stamp t_nft
  nft_isolate lb1
  stamp t0
  ka_kill lb1 KILL
  R+=(nft_ms:="$(diff_ms "$t0" "$t_nft")")
  watch_wait lb2 present "$t0" 15 || VIOL+=("VIP never reached lb2")
  settle "$interval"
  instruments_stop
  at=$(watch_first lb2 present "$t0")
  garp_check lb2 "$t0"
  nft_unisolate lb1
  # like a rebooted host: the dead keepalived left its VIP behind; the lab removes it as a reboot would
  ip -n "$(ns lb1)" addr del "$VIP/24" dev eth0 2>/dev/null || true
  R+=(advert_int_s:="$advert" new_active=lb2 stale_vip_removed_by=lab dataplane=haproxy)
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit keepalived-host-crash keepalived "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}
