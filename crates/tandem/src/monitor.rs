//! `tandem status --check`: the node's status document judged as a monitoring plugin (Nagios,
//! Icinga, Zabbix's external checks, Sensu) expects: one line starting `TANDEM OK`/`WARNING`/
//! `CRITICAL`/`UNKNOWN`, performance data after `|`, and the exit code 0/1/2/3.
//!
//! The thresholds match the Prometheus alert rules in `deploy/prometheus/tandem-alerts.yml`, so a
//! site that runs both sees the same verdicts.

use std::fmt::Write;
use std::process::ExitCode;

use tandem_status::{ConfigSync, Health, NodeState, PeerState, Ping, Status};

/// Acknowledgements come with every batch and at least every keepalive: longer than this without
/// one while connected means the peer is not applying updates (as `TandemReplicationLagging`).
const SYNC_ACK_WARN_MS: u64 = 30_000;

/// The monitoring-plugin levels, in the order of their exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }

    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// What the check prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub level: Level,
    pub line: String,
}

/// The verdict when the node could not be asked (daemon down, socket missing, bad credentials).
pub fn unreachable(error: &anyhow::Error) -> Verdict {
    // One line: the error chain joined, without the newlines a multi-line cause may hold.
    let reason = format!("{error:#}").replace('\n', " ");
    Verdict {
        level: Level::Unknown,
        line: format!("TANDEM UNKNOWN - status unavailable: {reason}"),
    }
}

/// Judges one node's status document.
pub fn judge(status: &Status) -> Verdict {
    let mut critical: Vec<String> = Vec::new();
    let mut warning: Vec<String> = Vec::new();
    let node = &status.node;
    let active = node.state == NodeState::Active;

    if node.state == NodeState::Fault {
        critical.push(format!(
            "fault: {}",
            node.fault.as_deref().unwrap_or("no reason given")
        ));
    }
    if let Some(peer) = &node.peer {
        let peer_active = peer.alive && peer.state == PeerState::Heard(NodeState::Active);
        if active && peer_active {
            critical.push(format!(
                "split brain: {} and {} both active",
                node.name, peer.name
            ));
        }
        let quiet_pair = [NodeState::Standby, NodeState::Stopped];
        if quiet_pair.contains(&node.state)
            && peer.alive
            && matches!(peer.state, PeerState::Heard(s) if quiet_pair.contains(&s))
        {
            critical.push(format!(
                "no active node: {} and {} both standby",
                node.name, peer.name
            ));
        }
        if !peer.alive {
            warning.push(format!("peer {} lost", peer.name));
        }
    }
    // Rolling upgrade half done (docs/upgrade.md): the peer is alive but unreadable, its state unknown.
    if let Some(peer) = &status.cluster.wire.incompatible_peer {
        warning.push(format!(
            "peer {} speaks heartbeat wire version {}, unreadable here: upgrade this node",
            peer.name, peer.version
        ));
    }
    if let ConfigSync::OutOfSync(why) = &status.config.sync {
        critical.push(format!("config out of sync: {why}"));
    }
    if node.ping == Ping::Unreachable {
        warning.push("ping nodes unreachable".to_string());
    }
    if let Some(replication) = &status.replication {
        if !replication.connected {
            warning.push(format!("replication to {} disconnected", replication.peer));
        } else if let Some(age) = replication
            .last_ack_age_ms
            .filter(|age| *age > SYNC_ACK_WARN_MS)
        {
            warning.push(format!(
                "replication lagging (last ack {} s ago)",
                age / 1000
            ));
        }
    }

    let (mut up, mut total, mut down) = (0usize, 0usize, Vec::new());
    for service in &status.services {
        total += service.servers.len();
        up += service.servers_up();
        if !service.servers.is_empty() && service.servers_up() == 0 {
            critical.push(format!("all servers of {} down", service.label));
        } else {
            down.extend(
                service
                    .servers
                    .iter()
                    .filter(|s| s.health == Health::Down)
                    .map(|s| format!("{}/{}", service.label, s.label)),
            );
        }
        // Only the node holding the VIPs serves: a listener that could not bind there is an outage.
        if active && !service.bind_errors.is_empty() {
            critical.push(format!(
                "{} not listening: {}",
                service.label,
                service.bind_errors.join("; ")
            ));
        }
    }
    if !down.is_empty() {
        warning.push(format!(
            "{} server(s) down: {}",
            down.len(),
            shorten(&down, 5)
        ));
    }

    let level = if !critical.is_empty() {
        Level::Critical
    } else if !warning.is_empty() {
        Level::Warning
    } else {
        Level::Ok
    };
    let mut line = format!("TANDEM {} - {}", level.word(), summary(status, up, total));
    for problem in critical.iter().chain(&warning) {
        let _ = write!(line, "; {problem}");
    }
    let peer_heard = node.peer.as_ref().map_or(String::new(), |p| {
        format!(" peer_last_heard={}ms", p.last_heard_ms)
    });
    let _ = write!(
        line,
        " | servers_up={up};;;0;{total} services={} vips_held={}{peer_heard}",
        status.services.len(),
        node.vips_held.len()
    );
    Verdict { level, line }
}

/// "lb1 active, peer lb2 standby, 23 services, 69/69 servers up".
fn summary(status: &Status, up: usize, total: usize) -> String {
    let node = &status.node;
    let peer = match &node.peer {
        Some(p) if p.alive => format!("peer {} {}", p.name, p.state),
        Some(p) => format!("peer {} dead", p.name),
        None => "no peer".to_string(),
    };
    format!(
        "{} {}, {peer}, {} services, {up}/{total} servers up",
        node.name,
        node.state,
        status.services.len()
    )
}

/// The first `max` items, then how many more.
fn shorten(items: &[String], max: usize) -> String {
    let mut text = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        let _ = write!(text, " and {} more", items.len() - max);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_status::IncompatiblePeer;

    /// The documented example of docs/admin-api.md: an active node with its standby peer, all up.
    fn example() -> Status {
        let doc = include_str!("../../../docs/admin-api.md");
        let start = doc
            .find("```json\n{\n  \"node\"")
            .expect("status example in admin-api.md");
        let body = &doc[start + 8..];
        let end = body.find("\n```").expect("end of the example");
        serde_json::from_str(&body[..end]).expect("the example parses")
    }

    fn healthy() -> Status {
        let mut s = example();
        s.node.state = NodeState::Active;
        s.node.fault = None;
        s.config.sync = ConfigSync::InSync;
        if let Some(p) = s.node.peer.as_mut() {
            p.alive = true;
            p.state = PeerState::Heard(NodeState::Standby);
        }
        if let Some(r) = s.replication.as_mut() {
            r.connected = true;
            r.last_ack_age_ms = Some(100);
        }
        if s.node.ping == Ping::Unreachable {
            s.node.ping = Ping::Reachable;
        }
        for service in &mut s.services {
            service.bind_errors.clear();
            for server in &mut service.servers {
                server.health = Health::Up;
            }
        }
        s
    }

    #[test]
    fn a_healthy_pair_is_ok_with_perfdata() {
        let v = judge(&healthy());
        assert_eq!(v.level, Level::Ok, "{}", v.line);
        assert!(v.line.starts_with("TANDEM OK - "), "{}", v.line);
        assert!(v.line.contains(" active, peer "), "{}", v.line);
        assert!(v.line.contains(" | servers_up="), "{}", v.line);
        assert_eq!(v.line.lines().count(), 1);
    }

    #[test]
    fn one_server_down_or_a_lost_peer_warns() {
        let mut s = healthy();
        let service = &mut s.services[0];
        let mut second = service.servers[0].clone();
        second.label.push_str("-b");
        service.servers.push(second);
        service.servers[0].health = Health::Down;
        let v = judge(&s);
        assert_eq!(v.level, Level::Warning, "{}", v.line);
        assert!(v.line.contains("1 server(s) down"), "{}", v.line);

        let mut s = healthy();
        let peer = s.node.peer.as_mut().expect("peer");
        peer.alive = false;
        peer.state = PeerState::Dead;
        let v = judge(&s);
        assert_eq!(v.level, Level::Warning, "{}", v.line);
        assert!(v.line.contains("lost"), "{}", v.line);

        let mut s = healthy();
        if let Some(r) = s.replication.as_mut() {
            r.last_ack_age_ms = Some(SYNC_ACK_WARN_MS + 1);
        }
        assert_eq!(judge(&s).level, Level::Warning);

        let mut s = healthy();
        s.node.peer = None;
        s.cluster.wire.incompatible_peer = Some(IncompatiblePeer {
            name: "lb2".into(),
            version: 2,
            last_heard_ms: 10,
        });
        let v = judge(&s);
        assert_eq!(v.level, Level::Warning, "{}", v.line);
        assert!(v.line.contains("heartbeat wire version 2"), "{}", v.line);
    }

    #[test]
    fn split_brain_fault_out_of_sync_and_a_dead_service_are_critical() {
        let mut s = healthy();
        s.node.peer.as_mut().expect("peer").state = PeerState::Heard(NodeState::Active);
        let v = judge(&s);
        assert_eq!(v.level, Level::Critical, "{}", v.line);
        assert!(v.line.starts_with("TANDEM CRITICAL - ") && v.line.contains("split brain"));

        let mut s = healthy();
        s.node.state = NodeState::Fault;
        s.node.fault = Some("adding 192.168.1.250 failed".into());
        assert_eq!(judge(&s).level, Level::Critical);

        let mut s = healthy();
        s.config.sync = ConfigSync::OutOfSync("peer rejected generation 7".into());
        assert!(
            judge(&s)
                .line
                .contains("config out of sync: peer rejected generation 7")
        );

        let mut s = healthy();
        for server in &mut s.services[0].servers {
            server.health = Health::Down;
        }
        let v = judge(&s);
        assert_eq!(v.level, Level::Critical);
        assert!(
            v.line
                .contains(&format!("all servers of {} down", s.services[0].label))
        );

        let mut s = healthy();
        s.node.state = NodeState::Standby;
        assert_eq!(
            judge(&s).level,
            Level::Critical,
            "both standby: nobody serves"
        );
    }

    #[test]
    fn an_unreachable_daemon_is_unknown_on_one_line() {
        let v = unreachable(&anyhow::anyhow!(
            "connect /run/tandem/admin.sock:\nNo such file"
        ));
        assert_eq!(v.level, Level::Unknown);
        assert_eq!(v.line.lines().count(), 1);
        assert!(v.line.starts_with("TANDEM UNKNOWN - "));
    }

    #[test]
    fn exit_codes_follow_the_plugin_convention() {
        let codes: Vec<u8> = [Level::Ok, Level::Warning, Level::Critical, Level::Unknown]
            .iter()
            .map(|l| *l as u8)
            .collect();
        assert_eq!(codes, [0, 1, 2, 3]);
    }
}
