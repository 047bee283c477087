#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build tandem, run its tests, the netns lab and the
# benchmarks against the references (HAProxy, keepalived). Idempotent; run as root.
set -euo pipefail
need=(haproxy keepalived nginx-light redis-server redis-tools wrk socat arping nftables tcpdump
      iproute2 iputils-ping curl openssl procps psmisc ca-certificates gcc
      prometheus systemd lintian man-db)
# crates/tandem/tests/browser.rs drives the System Overview page in headless Chromium (CI must run it);
# netns-tests/screenshot-page takes docs/system-overview.png with it. A font, so that pages render legibly.
need+=(chromium fonts-dejavu-core)
# netns-tests' mysql drill runs real MariaDB servers (own datadirs, in the lab's namespaces) under sysbench.
need+=(mariadb-server mariadb-client sysbench)
# netns-tests/bench/proxy-bench's fixed-rate mode (BENCH_RATE) paces requests with h2load (wrk cannot).
need+=(nghttp2-client)
missing=()
for package in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi
# Debian starts some of these services on install; tests start their own instances on loopback.
for service in nginx redis-server haproxy keepalived prometheus prometheus-node-exporter mariadb; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done
# Without systemd (a container), the package's init script may have started MariaDB: stop it too.
if ! command -v systemctl >/dev/null 2>&1 || ! systemctl is-system-running >/dev/null 2>&1; then
  if [[ -x /etc/init.d/mariadb ]] && /etc/init.d/mariadb status >/dev/null 2>&1; then
    /etc/init.d/mariadb stop || true
  fi
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust stable) is required" >&2; exit 1; }
# The Debian package (deploy/debian/build-package, tests/package) is built by cargo-deb; pinned so a new release
# cannot change the package under us, installed only when that version is missing.
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qF "$cargo_deb_version"; then
  echo "setup: installing cargo-deb $cargo_deb_version"
  cargo install cargo-deb --version "$cargo_deb_version" --locked
fi
