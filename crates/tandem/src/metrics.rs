//! Prometheus exposition for `/metrics`: cluster state, heartbeats, config version, services,
//! servers and stick tables. Every metric is documented in `docs/metrics.md`.
//!
//! Values are read from the status document built at scrape time (the same one `/api/status`
//! serves) into a fresh registry, so the data path never touches a Prometheus type and this module
//! knows nothing of the daemon.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tandem_status::{AdminState, Health, NodeState, Replication, Service, Status};

mod tls;

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
    fn float_counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> Option<CounterVec> {
        let vec = CounterVec::new(Opts::new(name, help), labels).ok()?;
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

/// Each ping node on its own (the election's input is `node.ping`: any node reachable).
fn render_ping_nodes(b: &Builder, nodes: &[tandem_status::PingNode]) {
    if let Some(up) = b.gauge_vec(
        "tandem_ping_node_up",
        "1 while this ping node answers (within fail_after probe rounds plus one timeout)",
        &["address"],
    ) {
        for node in nodes {
            up.with_label_values(&[node.address.to_string().as_str()])
                .set(i64::from(node.reachable));
        }
    }
    if let Some(rtt) = b.float_vec(
        "tandem_ping_node_rtt_seconds",
        "Round-trip time of this ping node's last answer",
        &["address"],
    ) {
        for node in nodes {
            if let Some(ms) = node.rtt_ms {
                rtt.with_label_values(&[node.address.to_string().as_str()])
                    .set(ms / 1000.0);
            }
        }
    }
}

/// Duplicate-VIP detection: conflicts per VIP, VIPs in conflict now, probes, and whether the check runs.
fn render_vip_conflicts(b: &Builder, node: &tandem_status::Node) {
    let conflicts = &node.vip_conflicts;
    if let Some(detected) = b.counter_vec(
        "tandem_vip_conflicts_total",
        "Conflicts detected per VIP: another MAC started claiming it while this node was active",
        &["vip"],
    ) {
        // Every configured VIP has a series (0 until its first conflict), so increase() sees the first one.
        for vip in &node.vips {
            let count = conflicts
                .vips
                .iter()
                .find(|c| c.vip == *vip)
                .map_or(0, |c| c.detected);
            detected
                .with_label_values(&[vip.to_string().as_str()])
                .inc_by(count);
        }
    }
    b.int_gauge(
        "tandem_vips_in_conflict",
        "VIPs another MAC claims now (within the last 3 check intervals, while this node is active)",
        i64::from(conflicts.in_conflict),
    );
    b.counter(
        "tandem_vip_conflict_probes_total",
        "ARP probes and DAD neighbour solicitations sent for the duplicate-VIP check",
        conflicts.probes_sent,
    );
    b.gauge(
        "tandem_vip_conflict_check_seconds",
        "Interval of the duplicate-VIP check (0: off)",
        conflicts.check_ms as f64 / 1000.0,
    );
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
    if let Some(us) = sync.rtt_us {
        b.gauge(
            "tandem_peer_rtt_seconds",
            "The kernel's smoothed RTT of the sync session's TCP connection to the peer",
            us as f64 / 1_000_000.0,
        );
    }
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
    render_traffic(&b, &status.services);
    tls::render_tls(&b, &status.services);
    tls::render_not_applied(&b, &status.config, &status.services);
    render_last_transition(&b, status);
    render_reloads(&b, status);
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
    render_ping_nodes(b, &node.ping_nodes);
    b.int_gauge(
        "tandem_vips_held",
        "Number of VIPs present on this node's interface",
        i64::try_from(node.vips_held.len()).unwrap_or(i64::MAX),
    );
    render_vip_conflicts(b, node);
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
        "tandem_released_connections_closed_total",
        "Proxied connections closed because this node gave up their VIPs",
        cluster.released_connections_closed,
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
    b.counter(
        "tandem_heartbeats_missed_total",
        "Heartbeats the peer should have sent (one per interval) that never arrived",
        cluster.heartbeats.missed,
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
    if let Some(garp) = b.counter_vec(
        "tandem_garp_sent_total",
        "VIP announcement frames handed to the kernel: gratuitous ARP (ipv4), unsolicited neighbour advertisements (ipv6)",
        &["family"],
    ) {
        garp.with_label_values(&["ipv4"]).inc_by(cluster.garp_sent.ipv4);
        garp.with_label_values(&["ipv6"]).inc_by(cluster.garp_sent.ipv6);
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

/// A histogram family made from counts read elsewhere (the proxy's lock-free buckets): the prometheus crate's
/// `Histogram` only counts observations made through it, so the family is built from the bucket counts and
/// encoded by the same registry and text encoder as every other family.
struct HistogramFamily {
    desc: Desc,
    family: MetricFamily,
}

impl HistogramFamily {
    fn new(name: &str, help: &str, label: &str) -> Option<Self> {
        let desc = Desc::new(
            name.into(),
            help.into(),
            vec![label.into()],
            Default::default(),
        )
        .ok()?;
        let mut family = MetricFamily::default();
        family.set_name(name.into());
        family.set_help(help.into());
        family.set_field_type(MetricType::HISTOGRAM);
        Some(HistogramFamily { desc, family })
    }

    fn add(&mut self, label: (&str, &str), h: &tandem_status::Histogram) {
        let mut pair = LabelPair::default();
        pair.set_name(label.0.into());
        pair.set_value(label.1.into());
        let buckets =
            h.le.iter()
                .zip(&h.cumulative)
                .map(|(&le, &count)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(count);
                    b
                })
                .collect();
        let mut histogram = prometheus::proto::Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(h.count);
        histogram.set_sample_sum(h.sum_seconds);
        let mut metric = Metric::from_label(vec![pair]);
        metric.set_histogram(histogram);
        self.family.mut_metric().push(metric);
    }
}

impl Collector for HistogramFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }
    fn collect(&self) -> Vec<MetricFamily> {
        vec![self.family.clone()]
    }
}

/// The data path's figures: response classes and latencies, no-server failures, retries, health transitions and
/// downtime, check durations, stick-table capacity and evictions, access-log drops.
fn render_traffic(b: &Builder, services: &[Service]) {
    let service_labels = &["service"];
    let server_labels = &["service", "server"];
    let codes = b.counter_vec(
        "tandem_http_responses_total",
        "HTTP responses sent to clients by status class (1xx..5xx, other), the proxy's own 502/503/504 included",
        &["service", "code"],
    );
    let mut response = HistogramFamily::new(
        "tandem_http_response_seconds",
        "HTTP: from the request sent to the real server until its response head arrived",
        "service",
    );
    let mut connect = HistogramFamily::new(
        "tandem_server_connect_seconds",
        "New connections to the service's real servers, until established",
        "service",
    );
    let no_server = b.counter_vec(
        "tandem_service_no_server_total",
        "Clients turned away or answered 503 because no real server could take them",
        service_labels,
    );
    let capacity = b.gauge_vec(
        "tandem_stick_table_size",
        "Most entries the service's stick table holds",
        service_labels,
    );
    let evictions = b.counter_vec(
        "tandem_stick_table_evictions_total",
        "Stick-table entries evicted to make room for new ones",
        service_labels,
    );
    let dropped = b.counter_vec(
        "tandem_access_log_dropped_total",
        "Access-log lines dropped because the writer's queue was full",
        service_labels,
    );
    let retries = b.counter_vec(
        "tandem_server_retries_total",
        "Failed connects to this server that were retried on another server",
        server_labels,
    );
    let up_down = b.counter_vec(
        "tandem_server_check_up_down_total",
        "UP -> DOWN transitions decided by the health checks",
        server_labels,
    );
    let downtime = b.float_counter_vec(
        "tandem_server_downtime_seconds_total",
        "Seconds the server was down after having been up (the current down period included)",
        server_labels,
    );
    let check_duration = b.float_vec(
        "tandem_server_check_duration_seconds",
        "Duration of the last completed health check",
        server_labels,
    );
    for service in services {
        let label = service.label.as_str();
        let t = &service.traffic;
        if service.mode == tandem_status::Mode::Http {
            if let Some(m) = &codes {
                for (class, count) in t.http_responses.classes() {
                    m.with_label_values(&[label, class]).inc_by(count);
                }
            }
            if let Some(h) = &mut response {
                h.add(("service", label), &t.response_seconds);
            }
        }
        if let Some(h) = &mut connect {
            h.add(("service", label), &t.connect_seconds);
        }
        if let Some(m) = &no_server {
            m.with_label_values(&[label]).inc_by(service.failures);
        }
        if t.stick_table_capacity > 0 {
            if let Some(m) = &capacity {
                m.with_label_values(&[label])
                    .set(to_i64(t.stick_table_capacity));
            }
            if let Some(m) = &evictions {
                m.with_label_values(&[label])
                    .inc_by(t.stick_table_evictions);
            }
        }
        if let Some(m) = &dropped {
            m.with_label_values(&[label]).inc_by(t.access_log_dropped);
        }
        for server in &service.servers {
            let labels = [label, server.label.as_str()];
            let e = &server.events;
            if let Some(m) = &retries {
                m.with_label_values(&labels).inc_by(e.retries);
            }
            if let Some(m) = &up_down {
                m.with_label_values(&labels).inc_by(e.up_down);
            }
            if let Some(m) = &downtime {
                m.with_label_values(&labels)
                    .inc_by(e.downtime_ms as f64 / 1000.0);
            }
            if let (Some(m), Some(ms)) = (&check_duration, e.check_duration_ms) {
                m.with_label_values(&labels).set(ms / 1000.0);
            }
        }
    }
    for family in [response, connect].into_iter().flatten() {
        let _ = b.registry.register(Box::new(family));
    }
}

/// `tandem_reloads_total{result}`.
fn render_reloads(b: &Builder, status: &Status) {
    if let Some(m) = b.counter_vec(
        "tandem_reloads_total",
        "Reloads of cluster.toml since start, by result (ok, rejected)",
        &["result"],
    ) {
        let reloads = &status.config.reloads;
        m.with_label_values(&["ok"]).inc_by(reloads.ok);
        m.with_label_values(&["rejected"]).inc_by(reloads.rejected);
    }
}

/// `tandem_last_transition_timestamp_seconds`: when this node entered its current state (`node.state_since_ms`
/// ago), so `time() - tandem_last_transition_timestamp_seconds` is the time since the last failover here.
fn render_last_transition(b: &Builder, status: &Status) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    b.gauge(
        "tandem_last_transition_timestamp_seconds",
        "Unix time when this node entered its current state (active, standby, ...)",
        now - status.node.state_since_ms as f64 / 1000.0,
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

#[cfg(test)]
mod traffic_tests {
    #![allow(clippy::unwrap_used)]

    /// The status document of `docs/admin-api.md` (a TCP service with a stick table and a server that went down
    /// once), rendered.
    fn rendered() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/admin-api.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let section = &doc[doc.find("## Status document").unwrap()..];
        let start = section.find("```json\n").unwrap() + "```json\n".len();
        let end = start + section[start..].find("```").unwrap();
        let status: tandem_status::Status = serde_json::from_str(&section[start..end]).unwrap();
        super::render(&status)
    }

    #[test]
    fn histograms_are_rendered_from_the_bucket_counts() {
        let text = rendered();
        for line in [
            "# TYPE tandem_server_connect_seconds histogram",
            "tandem_server_connect_seconds_bucket{service=\"mysql\",le=\"0.0005\"} 3",
            "tandem_server_connect_seconds_bucket{service=\"mysql\",le=\"0.001\"} 40",
            "tandem_server_connect_seconds_bucket{service=\"mysql\",le=\"10\"} 41",
            "tandem_server_connect_seconds_bucket{service=\"mysql\",le=\"+Inf\"} 41",
            "tandem_server_connect_seconds_sum{service=\"mysql\"} 0.031",
            "tandem_server_connect_seconds_count{service=\"mysql\"} 41",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn tls_handshakes_failures_and_certificate_expiry() {
        let text = rendered();
        let horizon = "service=\"horizon\"";
        for line in [
            format!("tandem_tls_handshakes_total{{{horizon}}} 117"),
            format!("tandem_tls_resumed_total{{{horizon}}} 40"),
            format!("tandem_tls_version_total{{{horizon},version=\"1.3\"}} 110"),
            format!("tandem_tls_alpn_total{{protocol=\"h2\",{horizon}}} 90"),
            format!("tandem_tls_handshake_failures_total{{reason=\"protocol\",{horizon}}} 2"),
            format!(
                "tandem_tls_handshake_failures_total{{reason=\"no_shared_parameters\",{horizon}}} 1"
            ),
            format!(
                "tandem_tls_certificate_expiry_timestamp_seconds{{certificate=\"horizon.pem\",{horizon}}} 1798761600"
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // The TCP service has none.
        assert!(!text.contains("tandem_tls_handshakes_total{service=\"mysql\"}"));
    }

    #[test]
    fn server_events_and_stick_table_capacity() {
        let text = rendered();
        let labels = "{server=\"Overcloud-controller-1\",service=\"mysql\"}";
        for line in [
            format!("tandem_server_check_up_down_total{labels} 1"),
            format!("tandem_server_downtime_seconds_total{labels} 12"),
            format!("tandem_server_check_duration_seconds{labels} 0.0004"),
            format!("tandem_server_retries_total{labels} 0"),
            "tandem_stick_table_size{service=\"mysql\"} 1000".into(),
            "tandem_stick_table_evictions_total{service=\"mysql\"} 0".into(),
            "tandem_service_no_server_total{service=\"mysql\"} 0".into(),
            "tandem_access_log_dropped_total{service=\"mysql\"} 0".into(),
            "tandem_reloads_total{result=\"ok\"} 2".into(),
            "tandem_heartbeats_missed_total 2".into(),
            "tandem_garp_sent_total{family=\"ipv4\"} 10".into(),
            "tandem_garp_sent_total{family=\"ipv6\"} 0".into(),
            "tandem_reloads_total{result=\"rejected\"} 1".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // A TCP service has no HTTP responses and no response-time histogram (the HTTP service has).
        let of_mysql = |family: &str| {
            text.lines()
                .any(|l| l.starts_with(family) && l.contains("service=\"mysql\""))
        };
        assert!(!of_mysql("tandem_http_responses_total{"), "{text}");
        assert!(!of_mysql("tandem_http_response_seconds_bucket"), "{text}");
        assert!(
            text.contains("tandem_http_responses_total{code=\"2xx\",service=\"horizon\"} 118"),
            "{text}"
        );
    }

    #[test]
    fn last_transition_is_state_since_ago() {
        let text = rendered();
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tandem_last_transition_timestamp_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let since_s = {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/admin-api.md");
            let doc = std::fs::read_to_string(path).unwrap();
            let at = doc.find("\"state_since_ms\": ").unwrap() + "\"state_since_ms\": ".len();
            let digits: String = doc[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<f64>().unwrap() / 1000.0
        };
        assert!(
            (now - since_s - value).abs() < 5.0,
            "{value} vs {now} - {since_s}"
        );
    }

    #[test]
    fn ping_nodes_and_peer_rtt() {
        let text = rendered();
        for line in [
            "tandem_ping_node_up{address=\"192.168.1.1\"} 1",
            "tandem_ping_node_rtt_seconds{address=\"192.168.1.1\"} 0.0004",
            "tandem_peer_rtt_seconds 0.00018",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Unknown is absent, not 0: a disconnected session has no RTT.
        let mut status = {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/admin-api.md");
            let doc = std::fs::read_to_string(path).unwrap();
            let section = &doc[doc.find("## Status document").unwrap()..];
            let start = section.find("```json\n").unwrap() + "```json\n".len();
            let end = start + section[start..].find("```").unwrap();
            serde_json::from_str::<tandem_status::Status>(&section[start..end]).unwrap()
        };
        status.replication.as_mut().unwrap().rtt_us = None;
        status.node.ping_nodes[0].reachable = false;
        status.node.ping_nodes[0].rtt_ms = None;
        let text = super::render(&status);
        assert!(!text.contains("tandem_peer_rtt_seconds "), "{text}");
        assert!(!text.contains("tandem_ping_node_rtt_seconds{"), "{text}");
        assert!(
            text.lines()
                .any(|l| l == "tandem_ping_node_up{address=\"192.168.1.1\"} 0"),
            "{text}"
        );
    }
}
