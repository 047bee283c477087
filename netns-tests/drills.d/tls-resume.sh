# shellcheck shell=bash
# tls-resume (issue 17): TLS session resumption survives a failover. The pair gets one more service, horizon_tls
# (VIP:8443, HTTP mode, the controllers' port 80, an ECDSA P-256 certificate made here with openssl and placed next to
# both nodes' cluster.toml before they start). The client takes a TLS 1.3 and a TLS 1.2 session from lb1
# (`openssl s_client -sess_out`); lb1 is SIGKILLed and lb2 takes over; the client offers both sessions to lb2
# (`-sess_in`). Both nodes derive the ticket keys from the shared secret (crates/proxy/src/tls/tickets.rs), so lb2
# resumes them: no full handshake after the failover. Bounds: `Reused` for both versions through lb2, each answered
# 200 by a controller; lb2's status counts 2 resumed handshakes; 1 holder. Sourced by netns-tests/drill.

TANDEM_DRILLS+=(tls-resume)
variants_tls_resume() { echo "200 1000"; }

TR_PORT=${TR_PORT:-8443}

# tr_prepare: the service (TD_CLUSTER_APPEND's file) and the certificate in both config dirs
tr_prepare() {
  local dir=$LAB_TMP/tls-resume node c
  mkdir -p "$dir"
  {
    printf '\n[[service]]\nlabel = "horizon_tls"\nvip = "%s"\nports = [%s]\nmode = "http"\n' "$VIP" "$TR_PORT"
    printf 'tls = { certificates = ["tls-resume.pem"] }\n'
    for c in ctl1 ctl2 ctl3; do
      printf '[[service.server]]\nlabel = "%s"\naddress = "%s"\nport = 80\n' "$c" "${NODE_IP[$c]}"
    done
  } >"$dir/service.toml"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=horizon.example.org \
    -addext subjectAltName=DNS:horizon.example.org -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
  for node in lb1 lb2; do
    mkdir -p "$(td_dir "$node")"
    cat "$dir/cert.pem" "$dir/key.pem" >"$(td_dir "$node")/tls-resume.pem"
    chmod 600 "$(td_dir "$node")/tls-resume.pem"
  done
}

# tr_session OUT ARGS...: one `openssl s_client` from the client to VIP:TR_PORT (one request, the answer read),
# its output in OUT
tr_session() {
  local out=$1
  shift
  { printf 'GET / HTTP/1.1\r\nHost: horizon.example.org\r\nConnection: close\r\n\r\n'; sleep 1; } |
    timeout 10 ip netns exec "$(ns client)" openssl s_client -connect "$(vip_target "$TR_PORT")" \
      -servername horizon.example.org -ign_eof "$@" >"$out" 2>&1 || true
}
tr_answered() { grep -q ' 200 OK' "$1"; }

drill_tls_resume() {
  local interval=$1 dead=$2 dir=$LAB_TMP/tls-resume t0 at v name resumed i
  tr_prepare
  local TD_CLUSTER_APPEND=$dir/service.toml
  td_pair "$interval" "$dead" || { VIOL+=("pair did not settle"); return 1; }
  # the first session once the controllers are up (health checks) and serve through the new service
  for v in tls1_3 tls1_2; do
    for i in $(seq 1 20); do
      tr_session "$dir/new-$v" "-$v" -sess_out "$dir/session-$v"
      tr_answered "$dir/new-$v" && break
      sleep 0.5
    done
    grep -q "^New, " "$dir/new-$v" || VIOL+=("$v: the first session is not a full handshake")
    tr_answered "$dir/new-$v" || VIOL+=("$v: no 200 through lb1: $(tail -n 3 "$dir/new-$v" | tr '\n' ' ')")
  done
  instruments_start lb1
  stamp t0
  kill -KILL "$(pid_of tandem-lb1)"
  watch_wait lb2 present "$t0" $((dead / 1000 + 10)) || VIOL+=("VIP never reached lb2")
  settle "$interval"
  instruments_stop
  at=$(watch_first lb2 present "$t0")
  garp_check lb2 "$t0"
  for v in tls1_3 tls1_2; do
    tr_session "$dir/again-$v" "-$v" -sess_in "$dir/session-$v"
    name=${v/tls1_/TLSv1.}
    if grep -q "^Reused, $name" "$dir/again-$v"; then R+=("${v}_resumed_on_lb2:=true"); else
      R+=("${v}_resumed_on_lb2:=false")
      VIOL+=("$v: not resumed on lb2: $(grep -E '^(New|Reused),' "$dir/again-$v" || echo 'no handshake')")
    fi
    tr_answered "$dir/again-$v" || VIOL+=("$v: no 200 through lb2")
  done
  resumed=$(td_status_json lb2 | "$JSON" get "services.label=horizon_tls.traffic.tls.resumed" 2>/dev/null || echo null)
  R+=(new_active=lb2 lb2_resumed_handshakes:="$(json_num "$resumed")")
  bound_eq lb2_resumed_handshakes "$resumed" 2
  bound_eq vip_holders_after "$(vip_holders)" 1
  emit tls-resume tandem "$interval" "$dead" "$(diff_ms "$at" "$t0")" "$SUMMARY" "$(vip_holders)" "$GARP_UPDATED"
}
