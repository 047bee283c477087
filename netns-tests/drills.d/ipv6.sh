# shellcheck shell=bash
# ipv6 (issue 16): crash, clean stop and failback with an IPv6 VIP. Sourced by netns-tests/drill.
#
# The lab turns IPv6 on for this drill only (lab_ipv6: fd7e:0:0:1::<node number>/64 on every node, no DAD) and the
# cluster gets one more service, mysql6: TCP on [fd7e:0:0:1::250]:3306 over the three controllers' IPv6 addresses
# (a second tnd-backend per controller listens on them). The client probes the IPv6 VIP. Per timing, three results:
#   ipv6-crash      SIGKILL the active lb1; lb2 takes over; lb1 restarted comes back standby
#   ipv6-clean-stop SIGTERM the active lb1; lb2 takes over at once
#   ipv6-failback   auto_failback = true: lb1 stopped, lb2 serves, lb1 started again takes the VIP back
# Asserted as for IPv4 (crash: client_outage_ms <= dead_ms + interval_ms; clean stop and failback <= 20 ms), 1 holder,
# and nd_updated: the client's neighbour entry for the VIP, primed to the old holder's MAC and REACHABLE, ends on the
# new holder's MAC while the client sent no neighbour solicitation for the VIP (tcpdump on the client): the unsolicited
# neighbour advertisement moved it. The advertisements seen from the new holder must carry the override flag only
# (solicited and router clear: `na_flags`).

TANDEM_DRILLS+=(ipv6)
variants_ipv6() {
  echo "10 30"
  [[ $SHORT == 1 ]] || echo "200 1000"
}

IPV6_PORT=3306
ipv6_service_file() { # the extra service, written once per run
  local f="$LAB_TMP/ipv6-service.toml" c n=0
  {
    printf '\n# the ipv6 drill: one TCP service on the IPv6 VIP\n[[service]]\nlabel = "mysql6"\nvip = "%s"\n' "$VIP6"
    printf 'ports = [%d]\nmode = "tcp"\npersistence = { mode = "none" }\n' "$IPV6_PORT"
    for c in ctl1 ctl2 ctl3; do
      n=$((n + 1))
      printf '[[service.server]]\nlabel = "Overcloud-controller-%d"\naddress = "%s"\nport = %d\nweight = 100\n' \
        "$n" "$(node_ip6 "$c")" "$IPV6_PORT"
    done
  } >"$f"
  echo "$f"
}

ipv6_backends() { # start|stop: a tnd-backend per controller on its IPv6 address
  local c
  for c in ctl1 ctl2 ctl3; do
    if [[ $1 == start ]]; then
      rm -f "$LAB_TMP/backend6-$c.ready"
      start_bg "backend6-$c" "$c" "$BACKEND" --name "$c" --address "$(node_ip6 "$c")" --ports "$IPV6_PORT" \
        --ready-file "$LAB_TMP/backend6-$c.ready"
    else
      stop_bg "backend6-$c" TERM 2
    fi
  done
  if [[ $1 == start ]]; then
    for c in ctl1 ctl2 ctl3; do
      wait_for 10 "IPv6 backend $c" test -e "$LAB_TMP/backend6-$c.ready" || die "IPv6 backend $c did not start"
    done
  fi
}

# Neighbour discovery capture on the client (the IPv6 twin of arp_capture_*): -v prints the NA's flags.
nd_capture_start() {
  : >"$LAB_TMP/nd-capture.log"
  if command -v tcpdump >/dev/null; then
    start_bg nd-capture client tcpdump -i eth0 -n -e -l -tt -U -v icmp6
    sleep 0.3
  fi
}
nd_capture_stop() { if alive nd-capture; then sleep 0.05; stop_bg nd-capture INT 2; fi; }
# nd_ads_from MAC T: unsolicited advertisements for the VIP from MAC after T
nd_ads_from() {
  awk -v t="$2" -v mac="$1" -v vip="$VIP" '
    ($1 * 1000 >= t + 0) && $2 == mac && index($0, "neighbor advertisement") && index($0, "tgt is " vip ",") { n++ }
    END { print n + 0 }' "$LAB_TMP/nd-capture.log" 2>/dev/null || echo 0
}
# nd_flags_from MAC T: the distinct flag sets of those advertisements ("[override]" when right), comma-joined
nd_flags_from() {
  awk -v t="$2" -v mac="$1" -v vip="$VIP" '
    ($1 * 1000 >= t + 0) && $2 == mac && index($0, "neighbor advertisement") && index($0, "tgt is " vip ",") {
      f = "none"; if (match($0, /Flags \[[^]]*\]/)) f = substr($0, RSTART + 6, RLENGTH - 6)
      if (!(f in seen)) { seen[f] = 1; out = out (out == "" ? "" : ",") f } }
    END { print out }' "$LAB_TMP/nd-capture.log" 2>/dev/null || true
}
# nd_client_solicitations T: neighbour solicitations for the VIP that the client sent after T (it re-resolved)
nd_client_solicitations() {
  awk -v t="$1" -v mac="${NODE_MAC[client]}" -v vip="$VIP" '
    ($1 * 1000 >= t + 0) && $2 == mac && index($0, "neighbor solicitation") && index($0, "who has " vip) { n++ }
    END { print n + 0 }' "$LAB_TMP/nd-capture.log" 2>/dev/null || echo 0
}
# nd_check NEW_NODE T0: sets ND_UPDATED (garp_check for IPv6) and adds the figures to R
nd_check() {
  local new=$1 t0=$2 mac seen asked flags
  mac=$(client_neigh_mac)
  seen=$(nd_ads_from "${NODE_MAC[$new]}" "$t0")
  flags=$(nd_flags_from "${NODE_MAC[$new]}" "$t0")
  asked=$(nd_client_solicitations "$t0")
  R+=(client_neigh_lladdr="$mac" client_neigh_state="$(ip -n "$(ns client)" neigh show "$VIP" dev eth0 | awk '{print $NF}')"
    new_active_mac="${NODE_MAC[$new]}" na_seen:="$seen" na_flags="$flags" client_neighbour_solicitations:="$asked")
  if [[ $mac == "${NODE_MAC[$new]}" && $asked == 0 ]]; then ND_UPDATED=true; else ND_UPDATED=false; fi
  R+=(nd_updated:="$ND_UPDATED")
  bound_eq nd_updated "$ND_UPDATED" true
  bound_eq na_flags "$flags" "[override]"
}

ipv6_instruments_start() { # FROM_NODE
  watch_start
  probe_start probe "$PROBE_PORT" --mode "$PROBE_MODE"
  client_neigh_prime "$1"
  nd_capture_start
  sleep 0.2
}
ipv6_instruments_stop() { nd_capture_stop; SUMMARY=$(probe_stop probe); watch_stop; }

drill_ipv6() {
  local interval=$1 dead=$2 t0 pid at rc=0 case
  lab_ipv6 on
  # shellcheck disable=SC2064 # the drill runs in its own subshell: leave IPv6 off for the next drill however it ends
  trap "td_stop_all; ipv6_backends stop; VIP=$VIP6 vip_flush; lab_ipv6 off" EXIT
  ipv6_backends start
  local VIP=$VIP6 PROBE_PORT=$IPV6_PORT PROBE_MODE=tcp TD_CLUSTER_APPEND
  TD_CLUSTER_APPEND=$(ipv6_service_file)
  for case in crash clean-stop failback; do
    R=(); VIOL=()
    if [[ $case == failback ]]; then
      td_pair "$interval" "$dead" auto_failback=true
      td_stop lb1 TERM
      wait_for 10 "lb2 active" vip_only lb2 || VIOL+=("lb2 never took over after lb1 stopped")
      ipv6_instruments_start lb2
      stamp t0
      td_start lb1
      watch_wait lb1 present "$t0" 30 || VIOL+=("lb1 never took the VIP back")
      settle "$interval"
      ipv6_instruments_stop
      at=$(watch_first lb1 present "$t0")
      nd_check lb1 "$t0"
      handover_figures lb2 lb1 "$t0"
      td_wait_state lb2 standby 5 || VIOL+=("lb2 is $(td_state lb2), want standby")
      bound_outage 20
    else
      td_pair "$interval" "$dead"
      ipv6_instruments_start lb1
      pid=$(pid_of tandem-lb1)
      stamp t0
      if [[ $case == crash ]]; then kill -KILL "$pid"; else kill -TERM "$pid"; fi
      watch_wait lb2 present "$t0" $((dead / 1000 + 10)) || VIOL+=("VIP never reached lb2")
      settle "$interval"
      ipv6_instruments_stop
      at=$(watch_first lb2 present "$t0")
      nd_check lb2 "$t0"
      handover_figures lb1 lb2 "$t0"
      wait_for 10 "lb1 exit" pid_gone "$pid" || VIOL+=("lb1 did not exit")
      td_start lb1
      td_wait_state lb1 standby 20 || VIOL+=("restarted lb1 is $(td_state lb1), want standby")
      if [[ $case == crash ]]; then
        wait_for 5 "stale VIP removed from lb1" vip_only lb2 || VIOL+=("restarted lb1 left the stale VIP")
        bound_outage $((dead + interval))
      else
        bound_outage 20
        bound_le takeover_ms "$(diff_ms "$at" "$t0")" $((dead < 1000 ? dead : 1000))
      fi
    fi
    R+=(vip="$VIP")
    bound_eq vip_holders_after "$(vip_holders)" 1
    emit "ipv6-$case" tandem "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$(vip_holders)" "$ND_UPDATED" || rc=1
  done
  return "$rc"
}
