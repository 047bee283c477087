# shellcheck shell=bash
# garp-conflict (issue 16): a third namespace (tnd-<pid>-intruder, 192.168.1.77) claims the VIP while lb1 is active.
# First silently (the address added, no announcement): lb1's ARP probe (every [heartbeat] conflict_check_ms, default
# 1000) is answered by the intruder's kernel, and lb1 must report the conflict within 2 check intervals. Then loudly:
# the intruder sends gratuitous ARPs (arping -U) that move the client's ARP entry to it; lb1 must re-announce at once
# so the client comes back, and after the intruder removes the address the client's entry must be on lb1's MAC.
# Asserted beside: status names the intruder's MAC, the metric counted it, the error is in lb1's log, no role
# change, 1 holder (of the two LB nodes). Sourced by netns-tests/drill.

TANDEM_DRILLS+=(garp-conflict)
NODE_IP[intruder]=192.168.1.77
NODE_MAC[intruder]=02:7e:00:00:01:77
GARP_CONFLICT_CHECK_MS=${GARP_CONFLICT_CHECK_MS:-1000}
GARP_CONFLICT_GARPS=${GARP_CONFLICT_GARPS:-3}

variants_garp_conflict() {
  echo "200 1000"
}

# conflict_field NODE PYTHON_EXPR: a figure of NODE's status document (`s` is the JSON; the first claimant of the
# first VIP in conflict is `c`), "null" when absent
conflict_field() {
  td_status_json "$1" | python3 -c '
import json, sys
s = json.load(sys.stdin)
v = (s["node"].get("vip_conflicts") or {}).get("vips") or [{}]
c = (v[0].get("claimants") or [{}])[0]
try:
    r = eval(sys.argv[1])
except Exception:
    r = None
print("null" if r is None else json.dumps(r) if not isinstance(r, str) else r)' "$2" 2>/dev/null || echo null
}
conflict_seen() { [[ $(conflict_field lb1 's["node"]["vip_conflicts"]["in_conflict"]') =~ ^[1-9] ]]; }

# garp_reannounce_ms: for each gratuitous ARP of the intruder in the client's capture, the time until the next
# announcement from lb1 (the re-announcement); prints the largest, "null" when the intruder sent none
garp_reannounce_ms() {
  awk -v bad="${NODE_MAC[intruder]}" -v good="${NODE_MAC[lb1]}" -v vip="$VIP" '
    BEGIN { gsub(/\./, "\\.", vip); worst = -1 }
    $0 ~ ("who-has " vip "( [(][^)]*[)])? tell " vip ",") || $0 ~ ("Reply " vip " is-at") {
      t = $1 * 1000
      if ($2 == bad) { if (pending == "") pending = t }
      else if ($2 == good && pending != "") { d = t - pending; if (d > worst) worst = d; pending = "" }
    }
    END { if (worst < 0) print "null"; else printf "%.1f\n", worst }' "$LAB_TMP/arp-capture.log" 2>/dev/null || echo null
}

drill_garp_conflict() {
  local interval=$1 dead=$2 check=$GARP_CONFLICT_CHECK_MS t0 t_garp first detect mac kind frames detected counted
  local logged=0 final takeovers0 takeovers1 reannounce probes
  td_pair "$interval" "$dead" "conflict_check_ms=$check" || { VIOL+=("the pair did not settle"); }
  lab_node_add intruder
  takeovers0=$(td_status_json lb1 | "$JSON" get cluster.takeovers 2>/dev/null || echo null)
  instruments_start lb1
  # 1. silent: only lb1's probes can find it
  stamp t0
  ip -n "$(ns intruder)" addr add "$VIP/32" dev eth0
  wait_for $((3 * check / 1000 + 3)) "lb1 reports the conflict" conflict_seen || VIOL+=("lb1 never reported the silent intruder")
  first=$(conflict_field lb1 'c["first_seen_unix_ms"]')
  detect=$(diff_ms "$first" "$t0")
  kind=$(conflict_field lb1 'c["kind"]')
  # 2. loud: gratuitous ARPs move the client's entry to the intruder; lb1 answers each with its own
  stamp t_garp
  nsx intruder arping -q -U -c "$GARP_CONFLICT_GARPS" -W 0.5 -i eth0 -S "$VIP" "$VIP" >/dev/null 2>&1 || true
  # 3. the intruder gives up the address; the client must end on lb1
  ip -n "$(ns intruder)" addr del "$VIP/32" dev eth0
  sleep "$(awk -v c="$check" 'BEGIN { print c / 1000 + 1 }')" # a deferred re-announcement and its burst
  instruments_stop
  final=$(client_neigh_mac)
  reannounce=$(garp_reannounce_ms)
  mac=$(conflict_field lb1 'c["mac"]')
  frames=$(conflict_field lb1 'c["frames"]')
  detected=$(conflict_field lb1 'v[0]["detected"]')
  probes=$(conflict_field lb1 's["node"]["vip_conflicts"]["probes_sent"]')
  counted=$(nsx lb1 curl -s --max-time 5 "http://127.0.0.1:9080/metrics" 2>/dev/null |
    awk -v vip="$VIP" '$1 == "tandem_vip_conflicts_total{vip=\"" vip "\"}" { print $2 }')
  logged=$(grep -c "VIP conflict" "$LAB_TMP/tandem-lb1.log" 2>/dev/null || true)
  takeovers1=$(td_status_json lb1 | "$JSON" get cluster.takeovers 2>/dev/null || echo null)
  if [[ $final == "${NODE_MAC[lb1]}" ]]; then GARP_UPDATED=true; else GARP_UPDATED=false; fi
  R+=(check_ms:="$check" detect_ms:="$(json_num "$detect")" first_claim_kind="$kind" intruder_mac="${NODE_MAC[intruder]}"
    status_mac="$mac" status_frames:="$(json_num "$frames")" conflicts_detected:="$(json_num "$detected")"
    metric_conflicts_total:="$(json_num "$counted")" log_lines:="${logged:-0}" probes_sent:="$(json_num "$probes")"
    intruder_garps:="$GARP_CONFLICT_GARPS" reannounce_after_garp_ms:="$(json_num "$reannounce")"
    client_arp_lladdr="$final" active_mac="${NODE_MAC[lb1]}"
    garp_from_intruder:="$(arp_garps_from "${NODE_MAC[intruder]}" "$t_garp")"
    vip_changes_lb1:="$(watch_changes lb1 "$t0")" vip_changes_lb2:="$(watch_changes lb2 "$t0")")
  bound_le detect_ms "$detect" $((2 * check))
  bound_eq first_claim_kind "$kind" arp-reply # the answer to lb1's probe, not a gratuitous ARP
  bound_eq status_mac "$mac" "${NODE_MAC[intruder]}"
  [[ ${counted:-0} =~ ^[1-9] ]] || VIOL+=("tandem_vip_conflicts_total{vip=\"$VIP\"} is ${counted:-missing}, want >= 1")
  [[ ${logged:-0} =~ ^[1-9] ]] || VIOL+=("no 'VIP conflict' error in lb1's log")
  # answered at once: at most one re-announcement gap (100 ms) plus scheduling on a loaded host
  bound_le reannounce_after_garp_ms "$reannounce" 250
  bound_eq garp_updated "$GARP_UPDATED" true
  bound_eq takeovers "$takeovers1" "$takeovers0"
  bound_eq vip_changes_lb1 "$(watch_changes lb1 "$t0")" 0
  bound_eq vip_changes_lb2 "$(watch_changes lb2 "$t0")" 0
  bound_eq lb1_state "$(td_state lb1)" active
  bound_eq lb2_state "$(td_state lb2)" standby
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit garp-conflict tandem "$interval" "$dead" "" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}
