# shellcheck shell=bash
# The comparison stack operators come from: Debian's keepalived (VRRPv3, unicast) moving the VIP, and HAProxy
# (bound to the VIP with `transparent`, so it listens while the address is absent) forwarding the OpenStack ports to
# the controllers. Sourced by `drill` after lib.sh.

# ka_config NODE ADVERT_S -> writes $LAB_TMP/keepalived-NODE.conf
ka_config() {
  local node=$1 advert=$2 peer state prio
  if [[ $node == lb1 ]]; then peer=lb2 state=MASTER prio=150; else peer=lb1 state=BACKUP prio=100; fi
  cat >"$LAB_TMP/keepalived-$node.conf" <<EOF
global_defs {
    router_id tnd_$node
    vrrp_version 3
    enable_script_security
    vrrp_garp_master_refresh 0
}
vrrp_instance openstack {
    state $state
    interface eth0
    virtual_router_id 51
    priority $prio
    advert_int $advert
    unicast_src_ip ${NODE_IP[$node]}
    unicast_peer {
        ${NODE_IP[$peer]}
    }
    virtual_ipaddress {
        $VIP/24 dev eth0
    }
}
EOF
}

ka_start() { # NODE ADVERT_S
  local node=$1
  ka_config "$node" "$2"
  rm -f "$LAB_TMP/keepalived-$node.ppid" "$LAB_TMP/keepalived-$node.vrrp.pid"
  # shellcheck disable=SC2046
  start_bg "keepalived-$node" "$node" $(rt_prefix daemon) keepalived --dont-fork --log-console --log-detail --no-syslog --vrrp \
    --use-file "$LAB_TMP/keepalived-$node.conf" --pid "$LAB_TMP/keepalived-$node.ppid" \
    --vrrp_pid "$LAB_TMP/keepalived-$node.vrrp.pid"
}

# ka_kill NODE SIGNAL: the node's HA stack stops, as tandem's single process would.
#   KILL = a crash: keepalived's VRRP child, its parent and HAProxy get SIGKILL (the VRRP child first, so nothing
#          can announce a shutdown); the VIP stays on the dead node's interface, like after tandem is SIGKILLed.
#   TERM = a clean stop: keepalived gets SIGTERM (its child sends priority 0 and drops the VIP), HAProxy SIGUSR1
#          (soft stop: it stops listening and lets connections in flight finish).
ka_kill() {
  local node=$1 sig=$2 child parent hap
  parent=$(pid_of "keepalived-$node")
  child=$(cat "$LAB_TMP/keepalived-$node.vrrp.pid" 2>/dev/null || true)
  hap=$(pid_of "haproxy-$node")
  if [[ $sig == KILL ]]; then
    kill -KILL ${child:+"$child"} "$parent" ${hap:+"$hap"} 2>/dev/null || true
  else
    kill -TERM "$parent" 2>/dev/null || true
    kill -USR1 ${hap:+"$hap"} 2>/dev/null || true
  fi
}
ka_stop() { # NODE: end keepalived for good (between drills: no grace needed, the lab flushes the VIP)
  local child
  child=$(cat "$LAB_TMP/keepalived-$1.vrrp.pid" 2>/dev/null || true)
  if [[ -n $child ]]; then kill -KILL "$child" 2>/dev/null || true; fi
  stop_bg "keepalived-$1" KILL 5
  rm -f "$LAB_TMP/keepalived-$1.vrrp.pid"
}

haproxy_config() { # NODE -> $LAB_TMP/haproxy-NODE.cfg: every OpenStack port, TCP mode, least connections
  local node=$1 f="$LAB_TMP/haproxy-$1.cfg" port c
  {
    printf 'global\n    maxconn 4000\n    pidfile %s\n\n' "$LAB_TMP/haproxy-$node.hpid"
    printf 'defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n\n'
    for port in 8042 8777 8776 9292 9191 8041 8004 8000 8003 80 35357 22 5000 3306 9696 8773 8775 6080 8774 8778 8779 6379 8080; do
      printf 'listen p%s\n    bind %s:%s transparent\n    balance leastconn\n' "$port" "$VIP" "$port"
      for c in ctl1 ctl2 ctl3; do
        printf '    server %s %s:%s check inter 2s rise 2 fall 5\n' "$c" "${NODE_IP[$c]}" "$port"
      done
      printf '\n'
    done
  } >"$f"
}

haproxy_start() { # NODE
  haproxy_config "$1"
  start_bg "haproxy-$1" "$1" haproxy -db -f "$LAB_TMP/haproxy-$1.cfg"
}
