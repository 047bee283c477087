# shellcheck shell=bash
# drain-persist (issue 14): a controller drained on the active node stays drained across a crash failover, a
# failback and a restart of both nodes. Sourced by netns-tests/drill.
#
# Drain Overcloud-controller-1 (ctl1) of glance_api (9292, TCP, no persistence: a drained server gets no new
# connection at all) on the active lb1 through its admin socket; wait until lb2 reports it drained (replicated over
# the sync session); SIGKILL lb1: the new active lb2 must send no new connection to ctl1. Restart lb1 (it restores
# the drain from state_dir and hears it from lb2) and fail back with `tandem takeover`: still none. Stop both, start
# both: both restore it, still none. Each phase's probe names the controllers that answered; the LB's own counter
# (total_connections of ctl1 on the serving node) must agree.

TANDEM_DRILLS+=(drain-persist)
variants_drain_persist() { echo "200 1000"; } # about state, not timing

DP_SERVICE=glance_api
DP_PORT=9292
DP_SERVER=Overcloud-controller-1
DP_CTL=ctl1
DP_PHASE_S=${DP_PHASE_S:-2}

dp_path() { echo "services.label=$DP_SERVICE.servers.label=$DP_SERVER.$1"; }
# dp_field NODE FIELD: a field of the drained server in NODE's status ("" when the node does not answer)
dp_field() { td_status_json "$1" | "$JSON" get "$(dp_path "$2")" 2>/dev/null || true; }
dp_is() { [[ $(dp_field "$1" admin_state) == "$2" ]]; } # NODE STATE
dp_up() { [[ $(dp_field "$1" health) == up ]]; }          # NODE
dp_json() { local v; v=$(dp_field "$1" "$2"); echo "${v:-null}"; } # NODE FIELD: as JSON, null when absent
# dp_answered SUMMARY: attempts the drained controller answered in a probe's summary
dp_answered() {
  local n; n=$("$JSON" get "answered_by.$DP_CTL" "$1" 2>/dev/null || true)
  [[ -z $n || $n == null ]] && n=0 # a controller that answered nothing is absent from the map
  echo "$n"
}
# dp_phase NAME: probe the service for DP_PHASE_S seconds; sets DP_SUMMARY
dp_phase() {
  probe_start "$1" "$DP_PORT"
  sleep "$DP_PHASE_S"
  DP_SUMMARY=$(probe_stop "$1")
}
dp_clear_state() { rm -f "$(td_dir lb1)/state/admin-states.json" "$(td_dir lb2)/state/admin-states.json"; }
# dp_check PHASE SUMMARY NODE: no attempt answered by the drained controller, none forwarded to it by NODE
dp_check() {
  local phase=$1 summary=$2 node=$3 answered conns
  answered=$(dp_answered "$summary")
  conns=$(dp_json "$node" total_connections)
  R+=("${phase}_answered_by:=$("$JSON" get answered_by "$summary" 2>/dev/null || echo null)"
    "${phase}_${DP_CTL}_attempts:=$(json_num "$answered")" "${phase}_${node}_conns_to_drained:=$conns")
  bound_eq "${phase}_${DP_CTL}_attempts" "$answered" 0
  bound_eq "${phase}_${node}_admin_state" "$(dp_field "$node" admin_state)" drain
}

drill_drain_persist() {
  local interval=$1 dead=$2 t0 t1 pid at before crash_summary conns_before
  dp_clear_state # nothing of an earlier run
  td_pair "$interval" "$dead"
  wait_for 15 "$DP_SERVICE through the VIP" vip_serves "$DP_PORT" || VIOL+=("$DP_SERVICE never answered")
  # every controller up on both nodes, so the probe would see the drained one if it were used
  wait_for 15 "$DP_SERVER up on lb2" dp_up lb2 || VIOL+=("$DP_SERVER never up on lb2")

  dp_phase dp-before
  before=$(dp_answered "$DP_SUMMARY")
  R+=(before_answered_by:="$("$JSON" get answered_by "$DP_SUMMARY" 2>/dev/null || echo null)")
  calc_le 1 "${before:-0}" || VIOL+=("$DP_CTL answered nothing before the drain: the drill cannot see a drain")

  # drain on the active node, as an operator would
  stamp t0
  td_cli lb1 server drain "$DP_SERVICE" "$DP_SERVER" >&2 || VIOL+=("tandem server drain failed")
  WAIT_STEP=0.02 wait_for 5 "drain replicated to lb2" dp_is lb2 drain || VIOL+=("lb2 never reported the drain")
  stamp t1
  R+=(replicated_ms:="$(diff_ms "$t1" "$t0")" lb2_source_after_drain:="$(dp_json lb2 admin_source)")
  bound_eq lb2_admin_source_via "$(td_status_json lb2 | "$JSON" get "$(dp_path admin_source.via)" 2>/dev/null)" replicated
  dp_phase dp-drained
  dp_check drained "$DP_SUMMARY" lb1

  # crash the active node: lb2 takes over and must not use the drained controller
  conns_before=$(dp_json lb2 total_connections)
  R+=(lb2_conns_to_drained_before_crash:="$conns_before")
  watch_start
  client_neigh_prime lb1
  arp_capture_start
  probe_start dp-crash "$DP_PORT"
  pid=$(pid_of tandem-lb1)
  stamp t0
  kill -KILL "$pid"
  watch_wait lb2 present "$t0" $((dead / 1000 + 10)) || VIOL+=("VIP never reached lb2")
  settle "$interval"
  sleep "$DP_PHASE_S"
  arp_capture_stop
  crash_summary=$(probe_stop dp-crash)
  SUMMARY=$crash_summary
  at=$(watch_first lb2 present "$t0")
  garp_check lb2 "$t0"
  watch_stop
  dp_check after_crash "$crash_summary" lb2
  bound_eq after_crash_lb2_conns_to_drained "$(dp_json lb2 total_connections)" "$conns_before"

  # the crashed node comes back (standby), then takes the VIP back on purpose
  td_start lb1
  td_wait_state lb1 standby 20 || VIOL+=("restarted lb1 is $(td_state lb1), want standby")
  wait_for 5 "stale VIP removed from lb1" vip_only lb2 || VIOL+=("restarted lb1 left the stale VIP")
  R+=(lb1_source_after_restart:="$(dp_json lb1 admin_source)")
  bound_eq restarted_lb1_admin_state "$(dp_field lb1 admin_state)" drain
  td_cli lb1 takeover >&2 || VIOL+=("tandem takeover (failback) failed")
  wait_for 10 "VIP back on lb1" vip_only lb1 || VIOL+=("the VIP did not come back to lb1")
  dp_phase dp-failback
  dp_check after_failback "$DP_SUMMARY" lb1

  # both nodes stop and start again: each restores the drain from its state_dir
  td_stop lb2 TERM
  td_stop lb1 TERM
  local n files=0
  for n in lb1 lb2; do [[ -s $(td_dir "$n")/state/admin-states.json ]] && files=$((files + 1)); done
  R+=(state_files:="$files")
  bound_eq state_files "$files" 2
  vip_flush
  td_start lb1
  td_start lb2
  td_wait_state lb1 active 20 && td_wait_state lb2 standby 20 && wait_for 5 "VIP on lb1 only" vip_only lb1 ||
    VIOL+=("the restarted pair did not settle: lb1=$(td_state lb1) lb2=$(td_state lb2)")
  wait_for 15 "$DP_SERVICE through the VIP" vip_serves "$DP_PORT" || VIOL+=("$DP_SERVICE never answered after the restart")
  R+=(lb1_source_after_both_restarted:="$(dp_json lb1 admin_source)" lb2_source_after_both_restarted:="$(dp_json lb2 admin_source)")
  bound_eq restarted_lb1_via "$(td_status_json lb1 | "$JSON" get "$(dp_path admin_source.via)" 2>/dev/null)" restored
  bound_eq restarted_lb2_via "$(td_status_json lb2 | "$JSON" get "$(dp_path admin_source.via)" 2>/dev/null)" restored
  dp_phase dp-restarted
  dp_check after_restart_both "$DP_SUMMARY" lb1
  bound_eq after_restart_both_lb2_admin_state "$(dp_field lb2 admin_state)" drain

  R+=(drained_service="$DP_SERVICE" drained_server="$DP_SERVER" new_active=lb2)
  bound_eq vip_holders_after "$(vip_holders)" 1
  local holders rc=0
  holders=$(vip_holders)
  emit drain-persist tandem "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$holders" "$GARP_UPDATED" || rc=1
  # leave nothing drained for the next drill: back online on both, and no state files
  td_cli lb1 server online "$DP_SERVICE" "$DP_SERVER" >&2 || true
  wait_for 5 "online replicated to lb2" dp_is lb2 online || true
  td_stop lb1 TERM
  td_stop lb2 TERM
  dp_clear_state
  return "$rc"
}
