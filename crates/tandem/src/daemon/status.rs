//! The node's status document: the daemon's parts (election, proxy, sync session, VIPs, config)
//! read once into one [`Status`], which the admin API serves and the page, CLI and metrics read.

use super::{Current, Daemon};
use std::time::Duration;
use tandem_cluster::driver::{ClusterStatus, PeerStatus};
use tandem_cluster::wire::{NodeState, PingState};
use tandem_config::service_vips;
use tandem_config::{Balance, Mode, PersistenceMode};
use tandem_proxy::{AdminState, ServerStatus, ServiceStatus};
use tandem_status as doc;
use tandem_sync::SyncStatus;
use tandem_types::Role;

impl Daemon {
    /// Everything `GET /api/status` shows, read now.
    pub(super) fn status_document(&self) -> doc::Status {
        let cluster = self.cluster_status();
        let current = self.current();
        let sync = self.sync_status();
        let config_sync = self.config_sync(&cluster, &current, sync.as_ref());
        let tls_errors = self.proxy.tls_errors();
        doc::Status {
            node: doc::Node {
                name: self.node.node.name.clone(),
                role: role(self.node.node.role),
                address: self.node.node.address,
                state: node_state(cluster.state),
                state_since_ms: millis(cluster.state_since.elapsed()),
                fault: cluster.fault.clone(),
                ping: ping(cluster.ping),
                ping_nodes: cluster.ping_nodes.iter().map(ping_node).collect(),
                manage_vips: self.node.node.manage_vips,
                interface: self.node.node.interface.clone(),
                vips: service_vips(&current.cluster),
                vips_held: self.vips_held(),
                vip_conflicts: self.conflicts.document(),
                uptime_s: self.started.elapsed().as_secs(),
                peer: cluster.peer.as_ref().map(|peer| self.peer(peer)),
            },
            config: doc::Config {
                generation: current.generation,
                digest: current.digest.clone(),
                sync: config_sync,
                reloads: {
                    let (ok, rejected) = self.reloads.get();
                    doc::Reloads { ok, rejected }
                },
                not_applied: tls_errors
                    .iter()
                    .map(|(service, error)| {
                        super::config_flow::tls_failure(
                            service,
                            error,
                            self.proxy.service(service).is_none(),
                        )
                    })
                    .collect(),
                not_applied_services: tls_errors.into_iter().map(|(service, _)| service).collect(),
            },
            cluster: doc::Cluster {
                takeovers: cluster.takeovers,
                releases: cluster.releases,
                split_brains: cluster.split_brains,
                warn_time_exceeded: cluster.warn_time_exceeded,
                vip_failures: cluster.vip_failures,
                last_event: cluster.last_event.clone(),
                heartbeats: doc::Heartbeats {
                    sent: cluster.heartbeats.sent,
                    send_errors: cluster.heartbeats.send_errors,
                    received: cluster.heartbeats.received,
                    missed: cluster.heartbeats.missed,
                    rejected: cluster
                        .heartbeats
                        .rejected
                        .iter()
                        .map(|(reason, count)| (reason.to_owned(), count))
                        .collect(),
                },
                wire: wire(&cluster),
                garp_sent: self.garp_sent.document(),
                released_connections_closed: self.proxy.released_connections_closed(),
            },
            replication: sync.map(replication),
            services: self.services(),
        }
    }

    /// Every service, each server with where its admin state came from.
    fn services(&self) -> Vec<doc::Service> {
        let held: std::collections::HashMap<(String, String), _> = self
            .admin_states
            .held()
            .into_iter()
            .map(|h| ((h.entry.service.clone(), h.entry.server.clone()), h))
            .collect();
        let mut services: Vec<doc::Service> =
            self.proxy.status().services.iter().map(service).collect();
        for service in &mut services {
            for server in &mut service.servers {
                server.admin_source = held
                    .get(&(service.label.clone(), server.label.clone()))
                    .map(super::admin_states::source_of);
            }
        }
        services
    }

    fn peer(&self, peer: &PeerStatus) -> doc::Peer {
        doc::Peer {
            name: peer.name.clone(),
            address: self.node.node.peer,
            role: role(peer.role),
            state: if peer.alive {
                doc::PeerState::Heard(node_state(peer.state))
            } else {
                doc::PeerState::Dead
            },
            alive: peer.alive,
            last_heard_ms: millis(peer.last_heard.elapsed()),
            state_since_ms: Some(millis(peer.state_since.elapsed())),
            holds_vips: peer.holds_vips,
            config_generation: peer.config_generation,
            config_digest: hex::encode(peer.config_digest),
            servers_up: peer.servers_up,
            servers_total: peer.servers_total,
        }
    }

    /// Standalone, peer not heard yet, in sync, or out of sync and why.
    fn config_sync(
        &self,
        cluster: &ClusterStatus,
        current: &Current,
        sync: Option<&SyncStatus>,
    ) -> doc::ConfigSync {
        let peer_digest = cluster
            .peer
            .as_ref()
            .map(|peer| hex::encode(peer.config_digest));
        match (&self.node.node.peer, &sync, &cluster.peer, peer_digest) {
            (None, _, _, _) => doc::ConfigSync::Standalone,
            // The sync session knows best once it has heard the peer's version.
            (Some(_), Some(sync), _, _) if sync.config.peer.is_some() => {
                if sync.config.in_sync {
                    doc::ConfigSync::InSync
                } else {
                    doc::ConfigSync::OutOfSync(
                        sync.config
                            .reason
                            .clone()
                            .unwrap_or_else(|| "versions differ".into()),
                    )
                }
            }
            (Some(_), _, None, _) => doc::ConfigSync::PeerNotHeard,
            (Some(_), _, Some(_), Some(digest)) if digest == current.digest => {
                doc::ConfigSync::InSync
            }
            (Some(_), _, Some(peer), _) => doc::ConfigSync::OutOfSync(format!(
                "peer runs generation {}",
                peer.config_generation
            )),
        }
    }

    /// The VIPs found on the interface at the last look.
    fn vips_held(&self) -> Vec<std::net::IpAddr> {
        self.vips_seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }
}

fn millis(age: Duration) -> u64 {
    u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
}

fn role(role: Role) -> doc::Role {
    match role {
        Role::Primary => doc::Role::Primary,
        Role::Secondary => doc::Role::Secondary,
    }
}

fn node_state(state: NodeState) -> doc::NodeState {
    match state {
        NodeState::Init => doc::NodeState::Init,
        NodeState::Standby => doc::NodeState::Standby,
        NodeState::Claiming => doc::NodeState::Claiming,
        NodeState::Acquiring => doc::NodeState::Acquiring,
        NodeState::Active => doc::NodeState::Active,
        NodeState::Releasing => doc::NodeState::Releasing,
        NodeState::Fault => doc::NodeState::Fault,
        NodeState::Stopped => doc::NodeState::Stopped,
    }
}

fn ping(ping: PingState) -> doc::Ping {
    match ping {
        PingState::NotConfigured => doc::Ping::NotConfigured,
        PingState::Reachable => doc::Ping::Reachable,
        PingState::Unreachable => doc::Ping::Unreachable,
    }
}

fn ping_node(node: &tandem_cluster::ping::PingNodeStatus) -> doc::PingNode {
    doc::PingNode {
        address: node.address,
        reachable: node.reachable,
        last_reply_age_ms: node.last_reply.map(|at| millis(at.elapsed())),
        rtt_ms: node.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
    }
}

fn service(service: &ServiceStatus) -> doc::Service {
    doc::Service {
        label: service.label.clone(),
        vip: service.vip,
        ports: service.ports.clone(),
        mode: match service.mode {
            Mode::Tcp => doc::Mode::Tcp,
            Mode::Http => doc::Mode::Http,
        },
        balance: match service.balance {
            Balance::WeightedLeastConnections => doc::Balance::WeightedLeastConnections,
            Balance::RoundRobin => doc::Balance::RoundRobin,
        },
        persistence: doc::Persistence {
            mode: match service.persistence.mode {
                PersistenceMode::None => doc::PersistenceMode::None,
                PersistenceMode::SourceIp => doc::PersistenceMode::SourceIp,
                PersistenceMode::HttpCookie => doc::PersistenceMode::HttpCookie,
                PersistenceMode::LastSuccessful => doc::PersistenceMode::LastSuccessful,
            },
            timeout_s: service.persistence.timeout_s,
            table_size: count(service.persistence.table_size),
            cookie_name: service.persistence.cookie_name.clone(),
        },
        current_connections: service.current_connections,
        total_connections: service.total_connections,
        bytes_in: service.bytes_in,
        bytes_out: service.bytes_out,
        failures: service.failures,
        bind_errors: service.bind_errors.clone(),
        stick_table_size: count(service.stick_table_size),
        servers: service.servers.iter().map(server).collect(),
        traffic: traffic(service),
    }
}

/// Response classes, histograms, stick-table capacity and access-log counts (zeros where they do not apply).
fn traffic(service: &ServiceStatus) -> doc::ServiceTraffic {
    let histogram = |h: &tandem_proxy::metrics::HistogramSnapshot| doc::Histogram {
        le: h.le.clone(),
        cumulative: h.cumulative.clone(),
        count: h.count,
        sum_seconds: h.sum_seconds,
    };
    let [
        informational,
        success,
        redirection,
        client_error,
        server_error,
        other,
    ] = service.http_responses.unwrap_or_default();
    doc::ServiceTraffic {
        http_responses: doc::HttpResponses {
            informational,
            success,
            redirection,
            client_error,
            server_error,
            other,
        },
        response_seconds: service
            .response_time
            .as_ref()
            .map(histogram)
            .unwrap_or_default(),
        connect_seconds: histogram(&service.connect_time),
        stick_table_capacity: count(service.stick_table_capacity),
        stick_table_evictions: service.stick_table_evictions,
        access_log_lines: service.access_log_lines,
        access_log_dropped: service.access_log_dropped,
        tls: service.tls.as_ref().map(tls),
    }
}

fn tls(t: &tandem_proxy::TlsStatus) -> doc::ServiceTls {
    let [timeout, protocol, no_shared_parameters, closed, other] = t.failures;
    doc::ServiceTls {
        handshakes: t.handshakes,
        resumed: t.resumed,
        tls12: t.tls12,
        tls13: t.tls13,
        alpn_h2: t.h2,
        alpn_http1: t.http1,
        failures: doc::TlsFailures {
            timeout,
            protocol,
            no_shared_parameters,
            closed,
            other,
        },
        certificates: t
            .certificates
            .iter()
            .map(|c| doc::TlsCertificate {
                file: c.file.clone(),
                names: c.names.clone(),
                not_before_unix: c.not_before_unix,
                not_after_unix: c.not_after_unix,
            })
            .collect(),
    }
}

fn server(server: &ServerStatus) -> doc::Server {
    doc::Server {
        label: server.label.clone(),
        address: server.address,
        port: server.port,
        weight: server.weight,
        // The proxy reports "up" or "down".
        health: if server.health == "up" {
            doc::Health::Up
        } else {
            doc::Health::Down
        },
        health_reason: server.health_reason.clone(),
        health_since_ms: Some(unix_ms_now().saturating_sub(server.health_since_unix_ms)),
        admin_state: match server.admin_state {
            AdminState::Online => doc::AdminState::Online,
            AdminState::Drain => doc::AdminState::Drain,
            AdminState::Halt { .. } => doc::AdminState::Halt,
        },
        // Filled in by `services` from the admin states.
        admin_source: None,
        current_connections: server.current_connections,
        total_connections: server.total_connections,
        bytes_in: server.bytes_in,
        bytes_out: server.bytes_out,
        check_failures: server.check_failures,
        connect_failures: server.connect_failures,
        idle_connections: count(server.idle_connections),
        last_check: server.last_check.as_ref().map(|check| doc::LastCheck {
            at_unix_ms: check.at_unix_ms,
            ok: check.ok,
            detail: check.detail.clone(),
        }),
        events: doc::ServerEvents {
            retries: server.retries,
            up_down: server.up_down,
            downtime_ms: server.downtime_ms,
            check_duration_ms: server
                .last_check
                .as_ref()
                .map(|check| check.duration_us as f64 / 1000.0),
        },
    }
}

fn replication(sync: SyncStatus) -> doc::Replication {
    let version = |version: tandem_sync::ConfigVersion| doc::ConfigVersion {
        generation: version.generation,
        digest: version.digest,
    };
    let counters = sync.counters;
    let r = counters.replication;
    doc::Replication {
        connected: sync.connected,
        direction: sync.direction,
        peer: sync.peer,
        protocol_version: sync.protocol_version,
        tables: sync
            .tables
            .into_iter()
            .map(|table| doc::TableSync {
                label: table.label,
                local_entries: table.local_entries,
                peer_entries: table.peer_entries,
                resyncing: table.resyncing,
            })
            .collect(),
        last_ack_age_ms: sync.last_ack_age_ms,
        caught_up: sync.caught_up,
        config: doc::ConfigPush {
            local: sync.config.local.map(version),
            peer: sync.config.peer.map(version),
            in_sync: sync.config.in_sync,
            reason: sync.config.reason,
        },
        counters: doc::SyncCounters {
            frames_sent: counters.frames_sent,
            frames_received: counters.frames_received,
            bytes_sent: counters.bytes_sent,
            bytes_received: counters.bytes_received,
            sessions_opened: counters.sessions_opened,
            rejected: counters.rejected,
            replication: doc::ReplicationCounters {
                resyncs_sent: r.resyncs_sent,
                resyncs_received: r.resyncs_received,
                resync_fallbacks: r.resync_fallbacks,
                updates_sent: r.updates_sent,
                updates_applied: r.updates_applied,
                updates_duplicate: r.updates_duplicate,
                entries_sent: r.entries_sent,
                entries_applied: r.entries_applied,
                entries_ignored: r.entries_ignored,
                unknown_table_messages: r.unknown_table_messages,
                admin_entries_sent: r.admin_entries_sent,
                admin_entries_applied: r.admin_entries_applied,
                admin_entries_refused: r.admin_entries_refused,
            },
        },
        last_error: sync.last_error,
        rtt_us: sync.rtt_us,
    }
}

/// A count the proxy keeps as `usize`, as the document's `u64`.
fn count(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// The heartbeat wire versions of this node and its peer (rolling upgrades).
fn wire(cluster: &ClusterStatus) -> doc::Wire {
    let wire = &cluster.wire;
    doc::Wire {
        min: wire.min,
        max: wire.max,
        speaking: wire.speaking,
        peer_version: wire.peer_version,
        incompatible_peer: wire
            .incompatible_peer
            .as_ref()
            .map(|peer| doc::IncompatiblePeer {
                name: peer.name.clone(),
                version: peer.version,
                last_heard_ms: millis(peer.last_heard.elapsed()),
            }),
        incompatible_received: cluster.heartbeats.incompatible,
    }
}

/// The wall clock in Unix milliseconds (0 before 1970), for ages of Unix-ms stamps.
fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}
