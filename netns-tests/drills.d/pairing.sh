# shellcheck shell=bash
# pairing (issue 14): two fresh nodes paired with the one-time code only, then a crash failover works. Sourced by
# netns-tests/drill.
#
# Both config dirs start "fresh": node.toml without `peer`, no secret file, and cluster.toml on lb1 only (lb2 has
# none). 1. `tandem pair --accept` on lb2 prints a code; lb1 types a different (well-formed) one: both fail and
# nothing is written on either node. 2. A new `--accept` on lb2; lb1 runs `tandem pair --peer 192.168.1.22` with the
# code read off lb2's output (as an operator reads it off the screen) on its standard input. Then: the same new
# secret (0600) on both, lb2's cluster.toml byte-equal to lb1's, each node.toml's peer set to the other and every
# other line kept, `tandem check` passes on both. 3. Both daemons start: lb1 active, lb2 standby, 1 VIP holder.
# 4. SIGKILL lb1: lb2 takes over within the crash drill's bound; lb1 restarted comes back standby.

TANDEM_DRILLS+=(pairing)
variants_pairing() { echo "200 1000"; } # the operator's timings; the crash bound is the crash drill's

# pairing_fresh NODE: the node as installed and configured before pairing (no peer, no secret)
pairing_fresh() {
  local dir; dir=$(td_dir "$1")
  rm -f "$dir/secret"
  sed -i '/^peer[[:space:]]*=/d' "$dir/node.toml"
}
# pairing_accept NAME: `tandem pair --accept` on lb2 in the background, its output in $LAB_TMP/NAME.log; prints
# the code once shown (bounded)
pairing_accept() {
  rm -f "$LAB_TMP/$1.log"
  start_bg "$1" lb2 "$TANDEM" pair --accept --wait 60 --config-dir "$(td_dir lb2)"
  wait_for 10 "lb2 to show a code" grep -q '^one-time code: ' "$LAB_TMP/$1.log" || return 1
  sed -n 's/^one-time code: //p' "$LAB_TMP/$1.log" | head -n 1
}
# pairing_peer CODE LOG: `tandem pair --peer` on lb1 with CODE typed on its standard input; its exit status
pairing_peer() {
  printf '%s\n' "$1" | td_cli lb1 pair --peer "${NODE_IP[lb2]}" >"$LAB_TMP/$2.log" 2>&1
}
# pairing_missing FRESH PAIRED: lines of FRESH (but role) missing from PAIRED
pairing_missing() { grep -v '^role[[:space:]]*=' "$1" | grep -cvxF -f "$2" || true; }
pairing_peer_of() { sed -n 's/^peer[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$(td_dir "$1")/node.toml"; }

drill_pairing() {
  local interval=$1 dead=$2 t0 t1 pid at code wrong rc d1 d2 s1 s2 lab_secret missing1 missing2 checks=true
  # an acceptor left waiting (the drill stopped early) would hold lb2's sync port for the next drill; the drill runs
  # in a subshell, so this trap is its own
  trap 'stop_bg pair-accept-wrong KILL 2; stop_bg pair-accept KILL 2' EXIT
  td_stop_all
  vip_flush
  td_configure "$interval" "$dead"
  d1=$(td_dir lb1) d2=$(td_dir lb2)
  pairing_fresh lb1
  pairing_fresh lb2
  rm -f "$d2/cluster.toml"
  cp "$d1/node.toml" "$LAB_TMP/pairing-lb1-fresh.toml"
  cp "$d2/node.toml" "$LAB_TMP/pairing-lb2-fresh.toml"
  lab_secret=$(cat "$LAB_TMP/tandem/secret")

  # 1. a wrong code: both sides fail, nothing written (00000-00000-00000 is well-formed: its check digit is right)
  code=$(pairing_accept pair-accept-wrong) || VIOL+=("lb2 showed no code")
  wrong=00000-00000-00000
  [[ $code != "$wrong" ]] || wrong=11111-11111-11116 # also well-formed
  rc=0; pairing_peer "$wrong" pair-peer-wrong || rc=$?
  wait_for 10 "the acceptor to exit" pid_gone "$(pid_of pair-accept-wrong)" || VIOL+=("lb2's acceptor still waits after a wrong code")
  R+=(wrong_code_primary_rc:="$rc"
    wrong_code_primary_said_wrong:="$(grep -q 'wrong code' "$LAB_TMP/pair-peer-wrong.log" && echo true || echo false)"
    wrong_code_secondary_said_wrong:="$(grep -q 'wrong code' "$LAB_TMP/pair-accept-wrong.log" && echo true || echo false)")
  ((rc != 0)) || VIOL+=("lb1 accepted a wrong code")
  grep -q 'wrong code' "$LAB_TMP/pair-peer-wrong.log" || VIOL+=("lb1 did not say 'wrong code'")
  grep -q 'wrong code' "$LAB_TMP/pair-accept-wrong.log" || VIOL+=("lb2 did not say 'wrong code'")
  if [[ -e $d1/secret || -e $d2/secret || -e $d2/cluster.toml ]] ||
    ! cmp -s "$d1/node.toml" "$LAB_TMP/pairing-lb1-fresh.toml" || ! cmp -s "$d2/node.toml" "$LAB_TMP/pairing-lb2-fresh.toml"; then
    VIOL+=("a wrong code wrote something"); R+=(wrong_code_wrote_nothing:=false)
  else R+=(wrong_code_wrote_nothing:=true); fi

  # 2. the right code, read off lb2's output
  code=$(pairing_accept pair-accept) || VIOL+=("lb2 showed no code")
  stamp t0
  rc=0; pairing_peer "$code" pair-peer || rc=$?
  stamp t1
  wait_for 10 "the acceptor to exit" pid_gone "$(pid_of pair-accept)" || VIOL+=("lb2's acceptor did not finish")
  ((rc == 0)) || { VIOL+=("tandem pair --peer exited $rc"); tail -n 5 "$LAB_TMP/pair-peer.log" >&2; }
  grep -q '^paired with lb1' "$LAB_TMP/pair-accept.log" || { VIOL+=("lb2 did not report the pairing"); tail -n 5 "$LAB_TMP/pair-accept.log" >&2; }
  s1=$(cat "$d1/secret" 2>/dev/null || true) s2=$(cat "$d2/secret" 2>/dev/null || true)
  missing1=$(pairing_missing "$LAB_TMP/pairing-lb1-fresh.toml" "$d1/node.toml")
  missing2=$(pairing_missing "$LAB_TMP/pairing-lb2-fresh.toml" "$d2/node.toml")
  td_cli lb1 check >/dev/null 2>&1 || { checks=false; VIOL+=("tandem check fails on lb1 after pairing"); }
  td_cli lb2 check >/dev/null 2>&1 || { checks=false; VIOL+=("tandem check fails on lb2 after pairing"); }
  R+=(code_shown="${code//[0-9]/d}" pair_ms:="$(diff_ms "$t1" "$t0")" primary_rc:="$rc"
    secrets_equal:="$([[ -n $s1 && $s1 == "$s2" ]] && echo true || echo false)"
    secret_new:="$([[ -n $s1 && $s1 != "$lab_secret" ]] && echo true || echo false)"
    secret_modes="$(stat -c %a "$d1/secret" 2>/dev/null || echo none)/$(stat -c %a "$d2/secret" 2>/dev/null || echo none)"
    cluster_equal:="$(cmp -s "$d1/cluster.toml" "$d2/cluster.toml" && echo true || echo false)"
    lb1_peer="$(pairing_peer_of lb1)" lb2_peer="$(pairing_peer_of lb2)"
    lb1_lines_lost:="$missing1" lb2_lines_lost:="$missing2" checks_pass:="$checks")
  [[ -n $s1 && $s1 == "$s2" ]] || VIOL+=("the secrets differ")
  [[ $s1 != "$lab_secret" ]] || VIOL+=("the secret is the lab's, not a new one")
  bound_eq secret_modes "$(stat -c %a "$d1/secret" 2>/dev/null)/$(stat -c %a "$d2/secret" 2>/dev/null)" 600/600
  cmp -s "$d1/cluster.toml" "$d2/cluster.toml" || VIOL+=("lb2's cluster.toml differs from lb1's")
  bound_eq lb1_peer "$(pairing_peer_of lb1)" "${NODE_IP[lb2]}"
  bound_eq lb2_peer "$(pairing_peer_of lb2)" "${NODE_IP[lb1]}"
  bound_eq lb1_lines_lost "$missing1" 0
  bound_eq lb2_lines_lost "$missing2" 0

  # 3. the paired nodes form a pair
  td_start lb1
  td_start lb2
  td_wait_state lb1 active 20 && td_wait_state lb2 standby 20 && wait_for 5 "VIP on lb1 only" vip_only lb1 || {
    VIOL+=("the paired nodes did not settle: lb1=$(td_state lb1) lb2=$(td_state lb2) holders=$(vip_holders)")
    tail -n 20 "$LAB_TMP/tandem-lb1.log" "$LAB_TMP/tandem-lb2.log" >&2 || true
  }
  R+=(paired_lb1_state="$(td_state lb1)" paired_lb2_state="$(td_state lb2)")

  # 4. a crash failover, as in the crash drill
  instruments_start lb1
  pid=$(pid_of tandem-lb1)
  stamp t0
  kill -KILL "$pid"
  watch_wait lb2 present "$t0" $((dead / 1000 + 10)) || VIOL+=("VIP never reached lb2")
  settle "$interval"
  instruments_stop
  at=$(watch_first lb2 present "$t0")
  garp_check lb2 "$t0"
  td_start lb1
  td_wait_state lb1 standby 20 || VIOL+=("restarted lb1 is $(td_state lb1), want standby")
  wait_for 5 "stale VIP removed from lb1" vip_only lb2 || VIOL+=("restarted lb1 left the stale VIP")
  R+=(new_active=lb2 restarted_old_state="$(td_state lb1)")
  bound_outage $((dead + interval))
  bound_eq garp_updated "$GARP_UPDATED" true
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit pairing tandem "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}
