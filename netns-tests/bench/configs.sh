# configs.sh: the configurations the proxy benchmarks share (sourced by proxy-bench and tcp-floor): the nginx
# backend, HAProxy and tandem serving the same service, and a standalone tandem node. Every address is loopback.

# nginx_conf DIR LISTEN_LINES : one worker, no access log, its own prefix and temp paths, a 100-byte file.
# BENCH_NGINX_CACHE=1 adds `open_file_cache` (nginx then no longer opens, stats and closes the file per request):
# a cheaper backend, so that where the backend shares the client's core that core is less often the limit.
nginx_conf() {
  local dir=$1 listen=$2 cache=""
  [[ ${BENCH_NGINX_CACHE:-0} == 1 ]] && cache="open_file_cache max=64 inactive=600s; open_file_cache_valid 600s;"
  mkdir -p "$dir/www" "$dir/tmp"
  head -c 99 /dev/zero | tr '\0' 'x' >"$dir/www/b100.html"
  echo >>"$dir/www/b100.html"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    $cache
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
$listen
        root $dir/www;
        location / { }
    }
}
EOF
}

# proxy_configs DIR VIP PORT BACKEND... : DIR/haproxy-{http,tcp}.cfg and DIR/cluster-{http,tcp}.toml, the same service
# for both proxies: least connections over the backends (same port), cookie persistence in HTTP mode.
proxy_configs() {
  local d=$1 vip=$2 port=$3 b i mode
  shift 3
  local backends=("$@")
  mkdir -p "$d"
  # HAProxy, one process, one thread, no logging; timeouts as the OpenStack example's [proxy] defaults.
  for mode in http tcp; do
    {
      echo "global"
      echo "    nbthread 1"
      echo "    maxconn 4096"
      echo "defaults"
      echo "    mode $mode"
      echo "    timeout connect 4s"
      echo "    timeout client 50s"
      echo "    timeout server 50s"
      [[ $mode == http ]] && echo "    option forwardfor"
      echo "frontend fe"
      echo "    bind $vip:$port"
      echo "    default_backend be"
      echo "backend be"
      echo "    balance leastconn"
      [[ $mode == http ]] && echo "    cookie SRV insert indirect nocache"
      i=0
      for b in "${backends[@]}"; do
        i=$((i + 1))
        if [[ $mode == http ]]; then
          echo "    server s$i $b:$port cookie s$i check inter 2000 rise 2 fall 5"
        else
          echo "    server s$i $b:$port check inter 2000 rise 2 fall 5"
        fi
      done
    } >"$d/haproxy-$mode.cfg"
    haproxy -c -q -f "$d/haproxy-$mode.cfg" || { echo "HAProxy rejects $d/haproxy-$mode.cfg" >&2; return 1; }
  done
  # tandem: the same service in each mode, three servers, weighted least connections, cookie persistence in HTTP.
  for mode in http tcp; do
    {
      echo "[cluster]"
      echo "name = \"bench\""
      echo "[health_check]"
      echo "interval_ms = 2000"
      echo "rise = 2"
      echo "fall = 5"
      echo "timeout_ms = 1000"
      echo "check = \"connect\""
      echo "[proxy]"
      echo "connect_timeout_ms = 4000"
      echo "client_timeout_ms = 50000"
      echo "server_timeout_ms = 50000"
      echo "[[service]]"
      echo "label = \"bench_$mode\""
      echo "vip = \"$vip\""
      echo "ports = [$port]"
      echo "mode = \"$mode\""
      echo "balance = \"weighted-least-connections\""
      if [[ $mode == http ]]; then
        echo "persistence = { mode = \"http-cookie\", cookie_name = \"SRV\" }"
      else
        echo "persistence = { mode = \"none\" }"
      fi
      i=0
      for b in "${backends[@]}"; do
        i=$((i + 1))
        echo "[[service.server]]"
        echo "label = \"s$i\""
        echo "address = \"$b\""
        echo "port = $port"
        echo "weight = 100"
      done
    } >"$d/cluster-$mode.toml"
  done
}

# node_toml DIR ADMIN_LISTEN ADDRESS HEARTBEAT_PORT SYNC_PORT [TUNING] : DIR/node.toml of a standalone node, its
# secret and state directory; TUNING (e.g. 'workers = 1') is the body of its [tuning] section.
node_toml() {
  local d=$1
  mkdir -p "$d/state"
  [[ -f $d/secret ]] || { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; } >"$d/secret"
  chmod 600 "$d/secret"
  cat >"$d/node.toml" <<EOF
# Standalone benchmark node: no peer (active on its own), VIPs are loopback addresses nobody moves.
[node]
name = "bench"
role = "primary"
interface = "lo"
address = "$3"
heartbeat_port = $4
sync_port = $5
manage_vips = false
secret_file = "$d/secret"
state_dir = "$d/state"
[admin]
listen = "$2"
socket = "$d/admin.sock"
[tuning]
${6:-}
EOF
}

