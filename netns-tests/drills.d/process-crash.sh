# shellcheck shell=bash
# process-crash (issue 16): SIGKILL the active daemon (lb1) on its live host. Its kernel closes the sync session at
# once (FIN), so lb2 probes lb1's sync port (refused) and sends a heartbeat (ICMP port unreachable) and takes over
# within a few round trips, at any heartbeat timing (docs/protocol.md, "Process death"). The client probe runs every
# PROBE_INTERVAL_MS = 2 ms here (its resolution; the default 10 ms could not show a 15 ms bound). Bounds:
# client_outage_ms <= 20 at 200/1000 and <= 15 at 10/30, garp_updated, lb1 restarted comes back standby, 1 holder.
# Figures for where the outage goes, all from the kill: detect_ms (lb2's log: peer's daemon gone), vip_on_new_ms
# (tnd-watch), garp_ms (the first announcement from lb2 captured on the client), recovered_ms (the probe's first
# success through lb2), exited_ms (lb1's process torn down by the kernel: its sockets close then, not at the signal;
# with lb1_rss_kb and lb1_threads). The daemons run at real-time priority here (CRASH_RT_DAEMONS=1, as
# LAB_RT_DAEMONS=1 does for every drill): on this 2-core machine loaded by parallel builds a normal-priority killed
# daemon took 1-160 ms just to be torn down by its kernel (exited_ms), and its peer's non-real-time sync task as
# long to be woken for the FIN; CRASH_RT_DAEMONS=0 measures that. Sourced by netns-tests/drill.

TANDEM_DRILLS+=(process-crash)
variants_process_crash() {
  echo "10 30"
  echo "200 1000"
}

# first_garp_ms MAC T: epoch ms of the first announcement of the VIP from MAC captured on the client at or after T
first_garp_ms() {
  awk -v t="$2" -v mac="$1" -v vip="$VIP" '
    BEGIN { gsub(/\./, "\\.", vip) }
    ($1 * 1000 >= t + 0) && $2 == mac && ($0 ~ ("who-has " vip "( [(][^)]*[)])? tell " vip ",") || $0 ~ ("Reply " vip " is-at")) {
      printf "%.3f\n", $1 * 1000; exit }' "$LAB_TMP/arp-capture.log" 2>/dev/null
}

# log_event_ms NODE TEXT T: epoch ms of the first line of NODE's daemon log at or after T containing TEXT (the log's
# RFC 3339 UTC timestamps, microseconds)
log_event_ms() {
  local line
  line=$(grep -F -- "$2" "$LAB_TMP/tandem-$1.log" 2>/dev/null | python3 -c '
import sys, datetime
t = float(sys.argv[1])
for line in sys.stdin:
    stamp = line.split()[0] if line.strip() else ""
    try:
        at = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        continue
    if at >= t:
        print(f"{at:.3f}")
        break' "$3" 2>/dev/null) || true
  echo "$line"
}

drill_process_crash() {
  local interval=$1 dead=$2 t0 t_exit pid at garp detect recovered bound rss threads i
  local PROBE_INTERVAL_MS=${PROBE_INTERVAL_MS:-2} LAB_RT_DAEMONS=${CRASH_RT_DAEMONS:-1}
  bound=$((interval >= 200 ? 20 : 15))
  # the issue's 15/20 ms targets, in CI (--short) too: since the sync and heartbeat sockets are released first
  # (tandem_types::exit_order) the outage reads 2-5 ms even at load average 7; the ~20-30 ms it read before would fail
  td_pair "$interval" "$dead"
  instruments_start lb1
  pid=$(pid_of tandem-lb1)
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo null)
  threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo null)
  stamp t0
  kill -KILL "$pid"
  # when the kernel has torn the process down (its sockets closed, so its peer can know): polled, ~1-3 ms resolution
  for ((i = 0; i < 3000; i++)); do pid_alive "$pid" || break; sleep 0.001; done
  stamp t_exit
  watch_wait lb2 present "$t0" $((dead / 1000 + 10)) || VIOL+=("VIP never reached lb2")
  settle "$interval"
  instruments_stop
  at=$(watch_first lb2 present "$t0")
  garp=$(first_garp_ms "${NODE_MAC[lb2]}" "$t0")
  detect=$(log_event_ms lb2 "peer's daemon gone" "$t0")
  recovered=$("$JSON" get first_recovery_at_ms "$SUMMARY" 2>/dev/null || echo "")
  [[ $recovered == null ]] && recovered=""
  garp_check lb2 "$t0"
  td_start lb1
  td_wait_state lb1 standby 20 || VIOL+=("restarted lb1 is $(td_state lb1), want standby")
  R+=(new_active=lb2 restarted_old_state="$(td_state lb1)" probe_interval_ms:="$PROBE_INTERVAL_MS"
    detect_ms:="$(diff_ms "$detect" "$t0")" vip_on_new_ms:="$(diff_ms "$at" "$t0")" garp_ms:="$(diff_ms "$garp" "$t0")"
    recovered_ms:="$(diff_ms "$recovered" "$t0")" exited_ms:="$(diff_ms "$t_exit" "$t0")" lb1_rss_kb:="${rss:-null}"
    lb1_threads:="${threads:-null}")
  bound_outage "$bound"
  bound_eq garp_updated "$GARP_UPDATED" true
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit process-crash tandem "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}
