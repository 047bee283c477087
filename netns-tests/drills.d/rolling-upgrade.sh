# shellcheck shell=bash
# rolling-upgrade (issue 14): the pair is upgraded one node at a time, the procedure of docs/upgrade.md, while a
# client probes the VIP. Sourced by netns-tests/drill.
#
# "old" is the lab's tandem binary; "next" is the same tree built with the test feature `wire-next` (heartbeat wire
# version 2 reading 1..=2, sync protocol 4 reading 2..=4: the next release; see ru_build_next). Each node runs
# its own copy of the binary ($LAB_TMP/tandem/NODE/bin/tandem); an upgrade is: stop (SIGTERM), replace the file,
# start. A watcher on each node records VIP presence through the whole drill; one probe per phase:
#   1. upgrade-standby  lb2 (standby) stopped, upgraded, started: lb1 stays active, 0 failed requests. In the mixed
#                       window lb2 shows its peer's older version (`cluster.wire`, the `upgrade` line of `tandem
#                       status`) and speaks it; lb1 took lb2's first (unreadable) heartbeats as a sign of life; the
#                       sync session runs at protocol 3 and lb1 (the primary) holds its config push to the newer peer.
#   2. handover         `tandem takeover` on the upgraded lb2: a planned clean handover, outage bounded like the
#                       takeover drill's (20 ms).
#   3. upgrade-old      lb1 (now standby) stopped, upgraded, started: lb2 stays active, 0 failed requests; both end
#                       speaking wire version 2 and sync protocol 4.
#   4. failback         `tandem takeover` on lb1: planned, bounded the same.
# Over the whole drill: never both nodes holding the VIP (split_brain_episodes 0: overlaps of 1 ms or more, the
# watchers' resolution) except the bounded overlap of the two planned handovers (make-before-break: the old holder
# keeps the VIP until the new one has added and announced it): an overlap that starts inside a handover phase and
# ends within handover_overlap_bound is planned (planned_overlaps, max_planned_overlap_ms), any other is a split
# brain; both_holding_ms reports every overlap, shorter ones included.

TANDEM_DRILLS+=(rolling-upgrade)
variants_rolling_upgrade() { echo "200 1000"; } # the operator's timings: an upgrade is about procedure, not speed

# RU_NEXT_TARGET: build the next release into that target dir (a full second build of every dependency). Unset, it is
# built in the lab's own target dir, where only tandem-cluster, tandem-sync and tandem are compiled again (their
# features differ), and the lab's binary is put back afterwards: minutes less in CI.
RU_NEXT_TARGET=${RU_NEXT_TARGET:-}
RU_HANDOVER_BOUND_MS=${RU_HANDOVER_BOUND_MS:-20}

# ru_build_next: the next release's binary (same profile as the lab's); sets RU_NEXT
ru_build_next() {
  local profile=debug args=() target_dir keep
  [[ $TANDEM == */release/* ]] && { profile=release; args=(--release); }
  target_dir=${RU_NEXT_TARGET:-$(dirname "$(dirname "$TANDEM")")}
  keep="$LAB_TMP/tandem-current"
  cp "$TANDEM" "$keep" || return 1
  log "building the next release (feature wire-next, $profile) in $target_dir"
  if ! (cd "$TND_ROOT" && cargo build -p tandem --features wire-next --target-dir "$target_dir" "${args[@]}" >&2); then
    return 1
  fi
  RU_NEXT="$LAB_TMP/tandem-next"
  cp "$target_dir/$profile/tandem" "$RU_NEXT" || return 1
  # the lab's binary again, replaced by rename (it may be running: no writing into it)
  if [[ -z $RU_NEXT_TARGET ]]; then
    cp "$keep" "$TANDEM.ru-restore" && mv -f "$TANDEM.ru-restore" "$TANDEM" || return 1
  fi
  [[ -x $RU_NEXT ]] && ! cmp -s "$RU_NEXT" "$TANDEM"
}
ru_bin() { echo "$(td_dir "$1")/bin/tandem"; }
# ru_install NODE BINARY: put BINARY in place as NODE's tandem (the node's daemon must be stopped)
ru_install() { mkdir -p "$(td_dir "$1")/bin" && install -m 0755 "$2" "$(ru_bin "$1")"; }
ru_start() { # NODE: start NODE's own binary, as td_start does the lab's
  local node=$1
  # shellcheck disable=SC2046
  start_bg "tandem-$node" "$node" $(rt_prefix daemon) env RUST_LOG="${RUST_LOG:-info}" "$(ru_bin "$node")" run \
    --config-dir "$(td_dir "$node")"
}
# ru_wire NODE FIELD: a field of NODE's cluster.wire (as JSON; null when absent)
ru_wire() { local v; v=$(td_status_json "$1" | "$JSON" get "cluster.wire.$2" 2>/dev/null || true); echo "${v:-null}"; }
ru_wire_is() { [[ $(ru_wire "$1" "$2") == "$3" ]]; } # NODE FIELD VALUE
ru_field() { local v; v=$(td_status_json "$1" | "$JSON" get "$2" 2>/dev/null || true); echo "${v:-null}"; }
# ru_phase_figures NAME SUMMARY: a phase's probe figures into R
ru_phase_figures() {
  R+=("${1}_failed_requests:=$(json_num "$("$JSON" get failed_requests "$2" 2>/dev/null)")"
    "${1}_client_outage_ms:=$(json_num "$("$JSON" get client_outage_ms "$2" 2>/dev/null)")"
    "${1}_attempts:=$(json_num "$("$JSON" get attempts "$2" 2>/dev/null)")")
}
# ru_gap_failures NAME EVENTS SWITCH_MS: a planned handover loses no request to a gap (drill's handover_bounds)
ru_gap_failures() {
  local inflight other
  read -r inflight other < <(probe_failure_split "$2" "$3")
  R+=("${1}_inflight_resets:=$inflight" "${1}_gap_failures:=$other")
  bound_eq "${1}_gap_failures" "$other" 0
  bound_le "${1}_inflight_resets" "$inflight" 2
}
ru_failed() { "$JSON" get failed_requests "$1" 2>/dev/null || echo null; }
ru_outage() { "$JSON" get client_outage_ms "$1" 2>/dev/null || echo null; }
# ru_bound_outage NAME SUMMARY LIMIT_MS: like bound_outage, for one phase's probe
ru_bound_outage() {
  local raw; raw=$(ru_outage "$2")
  if [[ -z $raw || $raw == null ]]; then VIOL+=("$1 client_outage_ms missing"); return; fi
  calc_le "$raw" "$3 + $PROBE_JITTER_MS" || VIOL+=("$1 client_outage_ms $raw > $3 (+ ${PROBE_JITTER_MS} ms of probe timer jitter)")
}
# ru_both_holding T0 BOUND_MS [FROM:TO ...]: from the two watchers' logs since T0, "EPISODES TOTAL_MS PLANNED
# MAX_PLANNED_MS": overlaps (both nodes holding the VIP) of 1 ms or more that are split brains, the total of every
# overlap, and the planned ones: starting inside a handover window FROM:TO (epoch ms) and lasting at most BOUND_MS
ru_both_holding() {
  python3 - "$LAB_TMP/watch-lb1.log" "$LAB_TMP/watch-lb2.log" "$@" <<'EOF'
import json, sys
t0 = float(sys.argv[3])
bound = float(sys.argv[4])
windows = [tuple(float(x) for x in w.split(":")) for w in sys.argv[5:]]
WATCH_RESOLUTION_MS = 1.0
events = []
for node, path in enumerate(sys.argv[1:3]):
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            events.append((float(e["at_ms"]), node, bool(e["present"])))
# at the same instant (the watchers' resolution), a removal before an addition: not an overlap anyone could see
events.sort(key=lambda e: (e[0], e[2]))
held = [False, False]
episodes, total, since = 0, 0.0, None
planned, max_planned = 0, 0.0
for at, node, present in events:
    held[node] = present
    both = held[0] and held[1]
    if both and since is None:
        since = at
    elif not both and since is not None:
        if at >= t0:
            overlap = at - max(since, t0)
            total += overlap
            # Each watcher sees a change up to one poll (1 ms) late, so an overlap shorter than that is the two
            # watchers' clocks, not two holders: a planned handover measured 0.4 ms "both" once with a 0.3 ms gap
            # the other way. A real split brain lasts at least a heartbeat interval.
            if any(a <= since <= b for a, b in windows) and overlap <= bound:
                planned += 1
                max_planned = max(max_planned, overlap)
            elif overlap >= WATCH_RESOLUTION_MS:
                episodes += 1
        since = None
if since is not None:  # both still holding when the logs end
    episodes += 1
print(episodes, round(total, 1), planned, round(max_planned, 1))
EOF
}
# ru_summary OUT SUMMARY...: one summary over the phases: attempts and failures summed, the longest outage
ru_summary() {
  local out=$1; shift
  python3 - "$out" "$@" <<'EOF'
import json, sys
total = {"attempts": 0, "failed_requests": 0, "client_outage_ms": 0}
for path in sys.argv[2:]:
    try:
        s = json.load(open(path))
    except (OSError, ValueError):
        continue
    total["attempts"] += s.get("attempts") or 0
    total["failed_requests"] += s.get("failed_requests") or 0
    total["client_outage_ms"] = max(total["client_outage_ms"], s.get("client_outage_ms") or 0)
json.dump(total, open(sys.argv[1], "w"))
EOF
}

drill_rolling_upgrade() {
  local interval=$1 dead=$2 t_start t0 t2 at at2 s1 s2 s3 s4 m1 episodes both_ms text held planned max_planned
  local t_end w_handover w_failback bound
  ru_build_next || { VIOL+=("the next release (feature wire-next) did not build"); RU_NEXT=""; }
  [[ -n ${RU_NEXT:-} ]] || {
    R+=(error="no next-release binary")
    emit rolling-upgrade tandem "$interval" "$dead" "" "$LAB_TMP/no-probe" "$(vip_holders)" null
    return 1
  }
  R+=(old_binary="$TANDEM" next_binary="$RU_NEXT")
  td_stop_all
  vip_flush
  td_configure "$interval" "$dead"
  ru_install lb1 "$TANDEM"
  ru_install lb2 "$TANDEM"
  ru_start lb1
  ru_start lb2
  td_wait_state lb1 active 20 && td_wait_state lb2 standby 20 && wait_for 5 "VIP on lb1 only" vip_only lb1 ||
    VIOL+=("the old pair did not settle: lb1=$(td_state lb1) lb2=$(td_state lb2)")
  wait_for 15 "the service through the VIP" vip_serves "$PROBE_PORT" || VIOL+=("the service never answered")
  R+=(old_wire_max:="$(ru_wire lb1 max)" old_sync_protocol:="$(ru_field lb1 replication.protocol_version)")
  watch_start
  stamp t_start

  # 1. upgrade the standby: the active node never moves
  probe_start ru-standby "$PROBE_PORT" --mode "$PROBE_MODE"
  m1=$(ru_field lb1 cluster.takeovers)
  td_stop lb2 TERM
  ru_install lb2 "$RU_NEXT"
  ru_start lb2
  td_wait_state lb2 standby 20 || VIOL+=("upgraded lb2 is $(td_state lb2), want standby")
  WAIT_STEP=0.1 wait_for 10 "lb2 answering lb1 in wire version 1" ru_wire_is lb2 speaking 1 ||
    VIOL+=("lb2 speaks wire version $(ru_wire lb2 speaking), want 1")
  WAIT_STEP=0.1 wait_for 10 "the sync session between the releases" \
    eval '[[ $(ru_field lb2 replication.protocol_version) == 3 && $(ru_field lb2 replication.connected) == true ]]' ||
    VIOL+=("no sync session at protocol 3 between the releases")
  text=$(td_cli lb2 status 2>/dev/null || true)
  held=$(grep -c 'cluster.toml push to the peer held' "$LAB_TMP/tandem-lb1.log" || true)
  R+=(mixed_lb2_wire:="$(td_status_json lb2 | "$JSON" get cluster.wire 2>/dev/null || echo null)"
    mixed_lb1_wire:="$(td_status_json lb1 | "$JSON" get cluster.wire 2>/dev/null || echo null)"
    mixed_lb2_upgrade_line="$(grep '^upgrade' <<<"$text" || true)"
    mixed_sync_protocol:="$(ru_field lb2 replication.protocol_version)"
    mixed_lb1_config_push_held_logged:="$held")
  bound_eq mixed_lb2_wire_max "$(ru_wire lb2 max)" 2
  bound_eq mixed_lb2_peer_version "$(ru_wire lb2 peer_version)" 1
  [[ $text == *"upgrade   peer speaks older heartbeat wire version 1"* ]] ||
    VIOL+=("tandem status on lb2 does not show the older peer")
  calc_le 1 "$(ru_wire lb1 incompatible_received)" ||
    VIOL+=("lb1 never took an unreadable heartbeat of lb2 as a sign of life")
  calc_le 1 "${held:-0}" || VIOL+=("lb1 (primary) did not hold its config push to the newer peer")
  sleep "$(awk -v i="$interval" 'BEGIN { s = 5 * i / 1000; if (s < 1) s = 1; print s }')"
  s1=$(probe_stop ru-standby)
  ru_phase_figures upgrade_standby "$s1"
  bound_eq upgrade_standby_failed_requests "$(ru_failed "$s1")" 0
  bound_eq upgrade_standby_lb1_takeovers "$(ru_field lb1 cluster.takeovers)" "$m1"
  bound_eq upgrade_standby_lb1_vip_changes "$(watch_changes lb1 "$t_start")" 0
  bound_eq upgrade_standby_lb1_state "$(td_state lb1)" active

  # 2. planned handover to the upgraded node
  probe_start ru-handover "$PROBE_PORT" --mode "$PROBE_MODE"
  client_neigh_prime lb1
  arp_capture_start
  sleep 0.2
  stamp t0
  td_cli lb2 takeover >&2 || VIOL+=("tandem takeover on lb2 failed")
  watch_wait lb2 present "$t0" 10 || VIOL+=("VIP never reached lb2")
  settle "$interval"
  arp_capture_stop
  s2=$(probe_stop ru-handover)
  at=$(watch_first lb2 present "$t0")
  garp_check lb2 "$t0"
  handover_figures lb1 lb2 "$t0"
  ru_phase_figures handover "$s2"
  R+=(handover_takeover_ms:="$(json_num "$(diff_ms "$at" "$t0")")")
  td_wait_state lb2 active 5 || VIOL+=("lb2 is $(td_state lb2), want active")
  td_wait_state lb1 standby 5 || VIOL+=("lb1 is $(td_state lb1), want standby")
  stamp t_end
  w_handover="$t0:$t_end"
  R+=(handover_both_holding_ms:="$HO_BOTH" handover_vip_gap_ms:="$HO_GAP")
  ru_bound_outage handover "$s2" "$RU_HANDOVER_BOUND_MS"
  ru_gap_failures handover "$LAB_TMP/ru-handover.events" "$at"

  # 3. upgrade the old node (now standby): nothing moves
  probe_start ru-old "$PROBE_PORT" --mode "$PROBE_MODE"
  stamp t2
  td_stop lb1 TERM
  ru_install lb1 "$RU_NEXT"
  ru_start lb1
  td_wait_state lb1 standby 20 || VIOL+=("upgraded lb1 is $(td_state lb1), want standby")
  WAIT_STEP=0.1 wait_for 10 "both speaking wire version 2" \
    eval '[[ $(ru_wire lb1 speaking) == 2 && $(ru_wire lb2 speaking) == 2 ]]' ||
    VIOL+=("after both upgrades: lb1 speaks $(ru_wire lb1 speaking), lb2 $(ru_wire lb2 speaking), want 2")
  WAIT_STEP=0.1 wait_for 10 "sync protocol 4" eval '[[ $(ru_field lb1 replication.protocol_version) == 4 ]]' ||
    VIOL+=("after both upgrades the sync session runs protocol $(ru_field lb1 replication.protocol_version), want 4")
  sleep "$(awk -v i="$interval" 'BEGIN { s = 5 * i / 1000; if (s < 1) s = 1; print s }')"
  s3=$(probe_stop ru-old)
  ru_phase_figures upgrade_old "$s3"
  R+=(upgraded_wire:="$(td_status_json lb1 | "$JSON" get cluster.wire 2>/dev/null || echo null)"
    upgraded_sync_protocol:="$(ru_field lb1 replication.protocol_version)"
    upgraded_config_sync="$(ru_field lb1 config.sync)")
  bound_eq upgrade_old_failed_requests "$(ru_failed "$s3")" 0
  bound_eq upgrade_old_lb2_vip_changes "$(watch_changes lb2 "$t2")" 0
  bound_eq upgrade_old_lb2_state "$(td_state lb2)" active

  # 4. fail back to lb1, planned
  probe_start ru-failback "$PROBE_PORT" --mode "$PROBE_MODE"
  sleep 0.2
  stamp t2
  td_cli lb1 takeover >&2 || VIOL+=("tandem takeover on lb1 failed")
  watch_wait lb1 present "$t2" 10 || VIOL+=("VIP never came back to lb1")
  settle "$interval"
  s4=$(probe_stop ru-failback)
  at2=$(watch_first lb1 present "$t2")
  ru_phase_figures failback "$s4"
  R+=(failback_takeover_ms:="$(json_num "$(diff_ms "$at2" "$t2")")")
  td_wait_state lb1 active 5 || VIOL+=("lb1 is $(td_state lb1), want active")
  td_wait_state lb2 standby 5 || VIOL+=("lb2 is $(td_state lb2), want standby")
  stamp t_end
  w_failback="$t2:$t_end"
  handover_figures lb2 lb1 "$t2"
  R+=(failback_both_holding_ms:="$HO_BOTH" failback_vip_gap_ms:="$HO_GAP")
  ru_bound_outage failback "$s4" "$RU_HANDOVER_BOUND_MS"
  ru_gap_failures failback "$LAB_TMP/ru-failback.events" "$at2"

  watch_stop
  bound=$(handover_overlap_bound "$interval" "$dead")
  read -r episodes both_ms planned max_planned < <(ru_both_holding "$t_start" "$bound" "$w_handover" "$w_failback")
  R+=(split_brain_episodes:="$(json_num "$episodes")" both_holding_ms:="$(json_num "$both_ms")"
    planned_overlaps:="$(json_num "$planned")" max_planned_overlap_ms:="$(json_num "$max_planned")"
    planned_overlap_bound_ms:="$bound"
    lb1_vip_changes:="$(watch_changes lb1 "$t_start")" lb2_vip_changes:="$(watch_changes lb2 "$t_start")")
  bound_eq split_brain_episodes "$episodes" 0
  # the VIP moved exactly twice on each node: away and back (lb1), in and out (lb2)
  bound_eq lb1_vip_changes "$(watch_changes lb1 "$t_start")" 2
  bound_eq lb2_vip_changes "$(watch_changes lb2 "$t_start")" 2
  SUMMARY="$LAB_TMP/ru-summary.json"
  ru_summary "$SUMMARY" "$s1" "$s2" "$s3" "$s4"
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit rolling-upgrade tandem "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}
