# shellcheck shell=bash
# sync-flap (issue 16): the sync session's TCP 7778 is cut (nft drop, both directions, in lb1's namespace) for
# SF_CUT_S (1) s every SF_PERIOD_S (2) s for SF_S (60) s (--short: SF_SHORT_S, 10), while a client makes a new stick
# entry every millisecond (~1000 updates/s): tnd-probe against nova_novncproxy (6080, source-ip persistence), each
# attempt from the next address of 10.64.0.0/12. After SF_WARM_S (3) s of load (the warm-up) both daemons' RSS is
# read; then the flapping; then the load stops and the drill waits (bounded) for the standby to hold as many entries
# as the active.
# Bounds: `lost_entries` (active's entries - standby's, once the standby stops changing) 0; no VIP change, no role
# change, lb1 active and lb2 standby after. Failed requests are reported, not bounded (the data plane does not depend
# on the sync session; the load generator's misses on a loaded machine are its own);
# each daemon's RSS at the end at most SF_RSS_GROWTH_MB (48) MB above its warm-up figure (the tables themselves grow
# by ~78 bytes per entry: ~5 MB for 60 000). Figures: sessions opened, resyncs, the sync counters, catch-up time
# after the last cut. Sourced by netns-tests/drill.

TANDEM_DRILLS+=(sync-flap)
variants_sync_flap() { # about the sync session: the defaults in --short, 10/30 too in the full run
  echo "200 1000"
  [[ $SHORT == 1 ]] || echo "10 30"
}
SF_S=${SF_S:-60}
SF_SHORT_S=${SF_SHORT_S:-10}
SF_CUT_S=${SF_CUT_S:-1}
SF_PERIOD_S=${SF_PERIOD_S:-2}
SF_WARM_S=${SF_WARM_S:-3}
SF_RSS_GROWTH_MB=${SF_RSS_GROWTH_MB:-48}
SF_SERVICE=nova_novncproxy
SF_PORT=6080

sf_cut() { # NODE: drop TCP 7778 both ways (no RST: the peer's kernel is still there, only silent)
  nsx "$1" nft -f - <<EOF
table inet tnd {
  chain in { type filter hook input priority 0; tcp dport 7778 drop; tcp sport 7778 drop; }
  chain out { type filter hook output priority 0; tcp dport 7778 drop; tcp sport 7778 drop; }
}
EOF
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
sf_entries() { local n; n=$(td_table_entries "$1" "$SF_SERVICE"); [[ $n =~ ^[0-9]+$ ]] && echo "$n" || echo null; }
sf_counter() { td_status_json "$1" | "$JSON" get "replication.counters.$2" 2>/dev/null || echo null; }
# sf_settled: the standby holds as many entries as the active, and the same a moment later
sf_settled() {
  local a b
  a=$(sf_entries lb1); b=$(sf_entries lb2)
  [[ $a != null && $a == "$b" ]] || return 1
  sleep 0.3
  [[ $(sf_entries lb1) == "$a" && $(sf_entries lb2) == "$a" ]]
}

drill_sync_flap() {
  local interval=$1 dead=$2 secs cycles i t0 t_last t_eq m1 m2 p1 p2 r1w r2w r1 r2 e1 e2 s1 s2 x1 x2 cuts=0
  secs=$SF_S; ((SHORT)) && secs=$SF_SHORT_S
  cycles=$((secs / SF_PERIOD_S))
  td_pair "$interval" "$dead"
  wait_for 15 "$SF_SERVICE through the VIP" vip_serves "$SF_PORT" || VIOL+=("$SF_SERVICE never answered")
  wait_for 15 "sync session up" sf_settled || VIOL+=("the sync session never settled before the drill")
  watch_start
  m1=$(role_moves lb1); m2=$(role_moves lb2)
  s1=$(sf_counter lb1 sessions_opened); s2=$(sf_counter lb2 sessions_opened)
  x1=$(sf_counter lb1 replication.resyncs_sent); x2=$(sf_counter lb2 replication.resyncs_received)
  p1=$(pid_of tandem-lb1); p2=$(pid_of tandem-lb2)
  # the load generator is not an instrument: at normal priority, like the daemons' proxies it loads
  LAB_RT=0 PROBE_INTERVAL_MS=1 PROBE_TIMEOUT_MS=1000 probe_start stick "$SF_PORT" --sources "$BULK_SOURCES"
  sleep "$SF_WARM_S"
  r1w=$(rss_kb "$p1"); r2w=$(rss_kb "$p2")
  stamp t0
  for ((i = 0; i < cycles; i++)); do # bounded: secs / period cuts
    sf_cut lb1
    cuts=$((cuts + 1))
    sleep "$SF_CUT_S"
    nft_restore lb1
    stamp t_last
    sleep "$(calc "$SF_PERIOD_S - $SF_CUT_S")"
  done
  SUMMARY=$(probe_stop stick)
  WAIT_STEP=0.1 wait_for 60 "lb2 to hold as many entries as lb1" sf_settled ||
    VIOL+=("lb2 never matched lb1's table: $(sf_entries lb2) vs $(sf_entries lb1)")
  stamp t_eq
  e1=$(sf_entries lb1); e2=$(sf_entries lb2)
  r1=$(rss_kb "$p1"); r2=$(rss_kb "$p2")
  watch_stop
  R+=(flap_s:="$secs" cuts:="$cuts" cut_s:="$SF_CUT_S" period_s:="$SF_PERIOD_S"
    updates_per_s:="$("$JSON" get successes "$SUMMARY" 2>/dev/null | awk -v s="$secs" -v w="$SF_WARM_S" '{ printf "%.0f", $1 / (s + w) }')"
    entries_active:="$e1" entries_standby:="$e2" lost_entries:="$([[ $e1 != null && $e2 != null ]] && echo $((e1 - e2)) || echo null)"
    caught_up_after_last_cut_ms:="$(diff_ms "$t_eq" "$t_last")"
    sessions_opened_lb1:="$(($(sf_counter lb1 sessions_opened) - s1))" sessions_opened_lb2:="$(($(sf_counter lb2 sessions_opened) - s2))"
    resyncs_sent_lb1:="$(($(sf_counter lb1 replication.resyncs_sent) - x1))" resyncs_received_lb2:="$(($(sf_counter lb2 replication.resyncs_received) - x2))"
    updates_applied_lb2:="$(sf_counter lb2 replication.updates_applied)" entries_applied_lb2:="$(sf_counter lb2 replication.entries_applied)"
    sync_rejected_lb1:="$(sf_counter lb1 rejected)" sync_rejected_lb2:="$(sf_counter lb2 rejected)"
    last_error_lb1="$(td_status_json lb1 | "$JSON" get replication.last_error 2>/dev/null || echo)"
    last_error_lb2="$(td_status_json lb2 | "$JSON" get replication.last_error 2>/dev/null || echo)"
    rss_warm_kb_lb1:="$r1w" rss_end_kb_lb1:="$r1" rss_warm_kb_lb2:="$r2w" rss_end_kb_lb2:="$r2"
    rss_growth_mb_lb1:="$(calc "($r1 - $r1w) / 1024")" rss_growth_mb_lb2:="$(calc "($r2 - $r2w) / 1024")"
    lb1_vip_changes:="$(watch_changes lb1 "$t0")" lb2_vip_changes:="$(watch_changes lb2 "$t0")"
    role_changes:="$(($(role_moves lb1) - m1 + $(role_moves lb2) - m2))"
    lb1_state="$(td_state lb1)" lb2_state="$(td_state lb2)")
  [[ $e1 =~ ^[0-9]+$ ]] && calc_le "$((secs * 300))" "$e1" || VIOL+=("only $e1 entries on lb1: the load did not reach ~1000 updates/s")
  bound_eq lost_entries "$([[ $e1 != null && $e2 != null ]] && echo $((e1 - e2)) || echo null)" 0
  bound_le rss_growth_mb_lb1 "$(calc "($r1 - $r1w) / 1024")" "$SF_RSS_GROWTH_MB"
  bound_le rss_growth_mb_lb2 "$(calc "($r2 - $r2w) / 1024")" "$SF_RSS_GROWTH_MB"
  bound_eq lb1_vip_changes "$(watch_changes lb1 "$t0")" 0
  bound_eq lb2_vip_changes "$(watch_changes lb2 "$t0")" 0
  bound_eq role_changes "$(($(role_moves lb1) - m1 + $(role_moves lb2) - m2))" 0
  bound_eq lb1_state "$(td_state lb1)" active
  bound_eq lb2_state "$(td_state lb2)" standby
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit sync-flap tandem "$interval" "$dead" "" "$SUMMARY" "$(vip_holders)" null
}
