//! Prometheus exposition for `/metrics`: cluster state, heartbeats, config version, services,
//! servers and stick tables. Every metric is documented in `docs/metrics.md`.
//!
//! Values are read from the status document built at scrape time (the same one `/api/status`
//! serves) into a fresh registry, so the data path never touches a Prometheus type and this module
//! knows nothing of the daemon.

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tandem_status::{AdminState, Health, NodeState, Replication, Service, Status};

struct Builder {
    registry: Registry,
}

impl Builder {
    fn gauge(&self, name: &str, help: &str, value: f64) {
        if let Ok(gauge) = Gauge::new(name, help) {
            gauge.set(value);
            let _ = self.registry.register(Box::new(gauge));
        }
    }
    fn int_gauge(&self, name: &str, help: &str, value: i64) {
        if let Ok(gauge) = IntGauge::new(name, help) {
            gauge.set(value);
            let _ = self.registry.register(Box::new(gauge));
        }
    }
    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Option<IntGaugeVec> {
        let vec = IntGaugeVec::new(Opts::new(name, help), labels).ok()?;
        self.registry.register(Box::new(vec.clone())).ok()?;
        Some(vec)
    }
    fn float_vec(&self, name: &str, help: &str, labels: &[&str]) -> Option<GaugeVec> {
        let vec = GaugeVec::new(Opts::new(name, help), labels).ok()?;
        self.registry.register(Box::new(vec.clone())).ok()?;
        Some(vec)
    }
    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
        let vec = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
        self.registry.register(Box::new(vec.clone())).ok()?;
        Some(vec)
    }
    fn counter(&self, name: &str, help: &str, value: u64) {
        if let Some(vec) = self.counter_vec(name, help, &[]) {
            vec.with_label_values::<&str>(&[]).inc_by(value);
        }
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Replication and config push on TCP 7778.
fn render_sync(b: &Builder, sync: &Replication) {
    b.int_gauge(
        "tandem_sync_connected",
        "1 while the authenticated session to the peer is open",
        i64::from(sync.connected),
    );
    b.int_gauge(
        "tandem_sync_caught_up",
        "1 when connected and no snapshot of the peer's tables is in progress",
        i64::from(sync.caught_up),
    );
    b.gauge(
        "tandem_sync_last_ack_age_seconds",
        "Seconds since the peer last acknowledged updates (-1: never)",
        sync.last_ack_age_ms.map_or(-1.0, |ms| ms as f64 / 1000.0),
    );
    if let Some(entries) = b.gauge_vec(
        "tandem_sync_table_entries",
        "Stick-table entries per service on this node (side=local) and as the peer last reported (side=peer)",
        &["service", "side"],
    ) {
        for table in &sync.tables {
            entries
                .with_label_values(&[table.label.as_str(), "local"])
                .set(to_i64(table.local_entries));
            if let Some(peer) = table.peer_entries {
                entries.with_label_values(&[table.label.as_str(), "peer"]).set(to_i64(peer));
            }
        }
    }
    let c = &sync.counters;
    b.counter(
        "tandem_sync_sessions_total",
        "Sync sessions opened",
        c.sessions_opened,
    );
    b.counter(
        "tandem_sync_frames_sent_total",
        "Sync frames sent",
        c.frames_sent,
    );
    b.counter(
        "tandem_sync_frames_received_total",
        "Sync frames received and authenticated",
        c.frames_received,
    );
    b.counter(
        "tandem_sync_bytes_sent_total",
        "Sync bytes sent",
        c.bytes_sent,
    );
    b.counter(
        "tandem_sync_bytes_received_total",
        "Sync bytes received",
        c.bytes_received,
    );
    if let Some(rejected) = b.counter_vec(
        "tandem_sync_rejected_total",
        "Sync connections or frames rejected (session closed), by reason",
        &["reason"],
    ) {
        for (reason, count) in &c.rejected {
            rejected
                .with_label_values(&[reason.as_str()])
                .inc_by(*count);
        }
    }
    let r = &c.replication;
    b.counter(
        "tandem_sync_updates_sent_total",
        "Stick-table updates sent to the peer",
        r.updates_sent,
    );
    b.counter(
        "tandem_sync_updates_applied_total",
        "Stick-table updates from the peer applied",
        r.updates_applied,
    );
    b.counter(
        "tandem_sync_resyncs_sent_total",
        "Full table snapshots sent",
        r.resyncs_sent,
    );
    b.counter(
        "tandem_sync_resyncs_received_total",
        "Full table snapshots received",
        r.resyncs_received,
    );
    b.counter(
        "tandem_sync_resync_fallbacks_total",
        "Snapshots sent because the peer fell behind the change log or was too slow",
        r.resync_fallbacks,
    );
}

/// Render every metric of this node from its status document.
pub fn render(status: &Status) -> String {
    let b = Builder {
        registry: Registry::new(),
    };
    render_node(&b, status);
    if let Some(sync) = &status.replication {
        render_sync(&b, sync);
    }
    render_services(&b, &status.services);
    render_build_and_process(&b);
    let mut out = Vec::new();
    if TextEncoder::new()
        .encode(&b.registry.gather(), &mut out)
        .is_err()
    {
        return String::from("# encoding failed\n");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `tandem_build_info` (what `tandem --version` prints) and the standard `process_*` families
/// (resident memory, open files, start time, CPU seconds) of this process, read from /proc.
fn render_build_and_process(b: &Builder) {
    if let Some(info) = b.gauge_vec(
        "tandem_build_info",
        "Always 1: the version and git commit this daemon was built from",
        &["version", "commit"],
    ) {
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), env!("TANDEM_GIT_COMMIT")])
            .set(1);
    }
    let _ = b.registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
}

/// The node, its peer, the election's counters and the config version.
fn render_node(b: &Builder, status: &Status) {
    let node = &status.node;
    let cluster = &status.cluster;
    if let Some(states) = b.gauge_vec(
        "tandem_node_state",
        "1 for the state this node is in, 0 for the others (like keepalived_vrrp_state)",
        &["state"],
    ) {
        for &state in NodeState::ALL {
            states
                .with_label_values(&[state.as_str()])
                .set(i64::from(node.state == state));
        }
    }
    if let Some(info) = b.gauge_vec(
        "tandem_node_info",
        "Constant 1, labelled with this node's name and configured role",
        &["node", "role"],
    ) {
        info.with_label_values(&[node.name.as_str(), node.role.as_str()])
            .set(1);
    }
    // A peer heard only in a wire version this node cannot read is alive too.
    let peer_up = node.peer.as_ref().is_some_and(|peer| peer.alive)
        || cluster.wire.incompatible_peer.is_some();
    b.int_gauge(
        "tandem_peer_up",
        "1 while the peer's heartbeats arrive within dead_ms",
        i64::from(peer_up),
    );
    b.gauge(
        "tandem_peer_last_heard_seconds",
        "Seconds since the last valid heartbeat from the peer (-1: never heard)",
        node.peer
            .as_ref()
            .map_or(-1.0, |peer| peer.last_heard_ms as f64 / 1000.0),
    );
    b.int_gauge(
        "tandem_vips_held",
        "Number of VIPs present on this node's interface",
        i64::try_from(node.vips_held.len()).unwrap_or(i64::MAX),
    );
    b.counter(
        "tandem_takeovers_total",
        "Times this node became active",
        cluster.takeovers,
    );
    b.counter(
        "tandem_releases_total",
        "Times this node gave up the active role",
        cluster.releases,
    );
    b.counter(
        "tandem_split_brain_total",
        "Times both nodes were found active when contact returned",
        cluster.split_brains,
    );
    b.counter(
        "tandem_heartbeat_warn_total",
        "Times the peer stayed silent longer than warn_ms",
        cluster.warn_time_exceeded,
    );
    b.counter(
        "tandem_vip_failures_total",
        "Failed VIP add/remove/announce operations",
        cluster.vip_failures,
    );
    b.counter(
        "tandem_heartbeats_sent_total",
        "Heartbeat datagrams sent",
        cluster.heartbeats.sent,
    );
    b.counter(
        "tandem_heartbeat_send_errors_total",
        "Heartbeat datagrams the kernel refused to send",
        cluster.heartbeats.send_errors,
    );
    b.counter(
        "tandem_heartbeats_received_total",
        "Valid heartbeat datagrams received",
        cluster.heartbeats.received,
    );
    if let Some(rejected) = b.counter_vec(
        "tandem_heartbeats_rejected_total",
        "Heartbeat datagrams dropped, by reason",
        &["reason"],
    ) {
        for (reason, count) in &cluster.heartbeats.rejected {
            rejected
                .with_label_values(&[reason.as_str()])
                .inc_by(*count);
        }
    }
    render_wire(b, &cluster.wire);
    b.int_gauge(
        "tandem_config_generation",
        "Generation of the cluster.toml this node serves",
        to_i64(status.config.generation),
    );
    b.int_gauge(
        "tandem_config_in_sync",
        "1 when the peer serves the same cluster.toml digest (standalone: 1)",
        i64::from(status.config.sync.is_settled()),
    );
}

/// Heartbeat wire versions: what a rolling upgrade is watched by.
fn render_wire(b: &Builder, wire: &tandem_status::Wire) {
    b.int_gauge(
        "tandem_peer_incompatible",
        "The peer's heartbeat wire version while it is alive in a version this node cannot read (0: none)",
        i64::from(wire.incompatible_peer.as_ref().map_or(0, |peer| peer.version)),
    );
    if let Some(versions) = b.gauge_vec(
        "tandem_heartbeat_wire_version",
        "Heartbeat wire versions: this node's min and max, the one it speaks now, the peer's latest",
        &["of"],
    ) {
        let mut values = vec![
            ("min", wire.min),
            ("max", wire.max),
            ("speaking", wire.speaking),
        ];
        if let Some(peer) = wire.peer_version {
            values.push(("peer", peer));
        }
        for (of, version) in values {
            versions.with_label_values(&[of]).set(i64::from(version));
        }
    }
    b.counter(
        "tandem_heartbeats_incompatible_total",
        "Authenticated heartbeats of a wire version this node cannot read (signs of life of a newer peer)",
        wire.incompatible_received,
    );
}

/// Every service and real server.
fn render_services(b: &Builder, services: &[Service]) {
    let service_labels = &["service"];
    let server_labels = &["service", "server"];
    let svc_current = b.gauge_vec(
        "tandem_service_connections",
        "Open client connections",
        service_labels,
    );
    let svc_total = b.counter_vec(
        "tandem_service_connections_total",
        "Client connections accepted",
        service_labels,
    );
    let svc_in = b.counter_vec(
        "tandem_service_bytes_in_total",
        "Bytes received from clients",
        service_labels,
    );
    let svc_out = b.counter_vec(
        "tandem_service_bytes_out_total",
        "Bytes sent to clients",
        service_labels,
    );
    let svc_up = b.gauge_vec(
        "tandem_service_servers_up",
        "Real servers passing health checks",
        service_labels,
    );
    let svc_stick = b.gauge_vec(
        "tandem_stick_table_entries",
        "Entries in the service's stick table",
        service_labels,
    );
    let svc_bind = b.gauge_vec(
        "tandem_service_listen_errors",
        "Listeners of the service that could not be bound",
        service_labels,
    );
    let srv_up = b.gauge_vec(
        "tandem_server_up",
        "1 while the real server passes its health checks",
        server_labels,
    );
    let srv_state = b.gauge_vec(
        "tandem_server_admin_state",
        "1 for the server's admin state (online, drain, halt)",
        &["service", "server", "state"],
    );
    let srv_weight = b.gauge_vec("tandem_server_weight", "Configured weight", server_labels);
    let srv_current = b.gauge_vec(
        "tandem_server_connections",
        "Open connections (HTTP: requests in flight)",
        server_labels,
    );
    let srv_total = b.counter_vec(
        "tandem_server_connections_total",
        "Connections sent to the server",
        server_labels,
    );
    let srv_in = b.counter_vec(
        "tandem_server_bytes_in_total",
        "Bytes from clients relayed to the server",
        server_labels,
    );
    let srv_out = b.counter_vec(
        "tandem_server_bytes_out_total",
        "Bytes from the server relayed to clients",
        server_labels,
    );
    let srv_checks = b.counter_vec(
        "tandem_server_check_failures_total",
        "Failed health checks",
        server_labels,
    );
    let srv_connect = b.counter_vec(
        "tandem_server_connect_failures_total",
        "Failed connects to the server",
        server_labels,
    );
    let srv_check_age = b.float_vec(
        "tandem_server_last_check_timestamp_seconds",
        "Unix time of the last completed health check",
        server_labels,
    );
    for service in services {
        let label = [service.label.as_str()];
        if let Some(m) = &svc_current {
            m.with_label_values(&label)
                .set(to_i64(service.current_connections));
        }
        if let Some(m) = &svc_total {
            m.with_label_values(&label)
                .inc_by(service.total_connections);
        }
        if let Some(m) = &svc_in {
            m.with_label_values(&label).inc_by(service.bytes_in);
        }
        if let Some(m) = &svc_out {
            m.with_label_values(&label).inc_by(service.bytes_out);
        }
        if let Some(m) = &svc_stick {
            m.with_label_values(&label)
                .set(to_i64(service.stick_table_size));
        }
        if let Some(m) = &svc_bind {
            m.with_label_values(&label)
                .set(service.bind_errors.len() as i64);
        }
        let mut up = 0;
        for server in &service.servers {
            let labels = [service.label.as_str(), server.label.as_str()];
            let is_up = server.health == Health::Up;
            up += i64::from(is_up);
            if let Some(m) = &srv_up {
                m.with_label_values(&labels).set(i64::from(is_up));
            }
            if let Some(m) = &srv_state {
                for &state in AdminState::ALL {
                    m.with_label_values(&[labels[0], labels[1], state.as_str()])
                        .set(i64::from(server.admin_state == state));
                }
            }
            if let Some(m) = &srv_weight {
                m.with_label_values(&labels).set(i64::from(server.weight));
            }
            if let Some(m) = &srv_current {
                m.with_label_values(&labels)
                    .set(to_i64(server.current_connections));
            }
            if let Some(m) = &srv_total {
                m.with_label_values(&labels)
                    .inc_by(server.total_connections);
            }
            if let Some(m) = &srv_in {
                m.with_label_values(&labels).inc_by(server.bytes_in);
            }
            if let Some(m) = &srv_out {
                m.with_label_values(&labels).inc_by(server.bytes_out);
            }
            if let Some(m) = &srv_checks {
                m.with_label_values(&labels).inc_by(server.check_failures);
            }
            if let Some(m) = &srv_connect {
                m.with_label_values(&labels).inc_by(server.connect_failures);
            }
            if let (Some(m), Some(check)) = (&srv_check_age, &server.last_check) {
                m.with_label_values(&labels)
                    .set(check.at_unix_ms as f64 / 1000.0);
            }
        }
        if let Some(m) = &svc_up {
            m.with_label_values(&label).set(up);
        }
    }
}
