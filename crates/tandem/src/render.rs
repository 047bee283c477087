//! Human-readable forms of the status document for `tandem status`.

use std::fmt::Write;
use tandem_status::{AdminEndpoint, AdminState, Status};

/// A list as display text ("none" when empty).
fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An optional number as display text ("-" when absent).
fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// Duplicate-VIP detection: one line per MAC that claimed one of this node's VIPs, upper case while it still does.
fn vip_conflicts(out: &mut String, conflicts: &tandem_status::VipConflicts) {
    for vip in &conflicts.vips {
        for claimant in &vip.claimants {
            let (tag, verb) = if claimant.current {
                ("CONFLICT", "claimed by")
            } else {
                ("conflict", "was claimed by")
            };
            let _ = writeln!(
                out,
                "{tag}  {} {verb} {} ({}): first seen {}, last {} ms ago, {} frames ({} conflicts detected for it)",
                vip.vip,
                claimant.mac,
                claimant.kind,
                tandem_status::UtcTime(claimant.first_seen_unix_ms),
                claimant.last_seen_age_ms,
                claimant.frames,
                vip.detected
            );
        }
    }
}

/// The status document as an operator reads it on a terminal.
pub fn status_text(status: &Status) -> String {
    let mut out = String::new();
    let node = &status.node;
    let config = &status.config;
    let _ = writeln!(
        out,
        "node      {} ({}), state {}",
        node.name,
        node.role,
        node.state.as_str().to_uppercase()
    );
    match (&node.peer, &status.cluster.wire.incompatible_peer) {
        (None, Some(peer)) => {
            let _ = writeln!(
                out,
                "peer      {}, alive in heartbeat wire version {} (unreadable here), last heard {} ms ago",
                peer.name, peer.version, peer.last_heard_ms
            );
        }
        (None, None) => {
            let _ = writeln!(out, "peer      none (standalone)");
        }
        (Some(peer), _) => {
            let _ = writeln!(
                out,
                "peer      {} at {}, state {}, last heard {} ms ago",
                peer.name,
                or_dash(peer.address),
                peer.state,
                peer.last_heard_ms
            );
        }
    }
    if let Some(line) = status.cluster.wire.mixed() {
        let _ = writeln!(out, "upgrade   {line}");
    }
    let _ = writeln!(out, "vips      {}", list(&node.vips_held));
    vip_conflicts(&mut out, &node.vip_conflicts);
    let _ = writeln!(
        out,
        "config    generation {}, digest {}, {}",
        config.generation,
        short_digest(&config.digest),
        config.sync
    );
    for problem in &config.not_applied {
        let _ = writeln!(out, "  NOT APPLIED: {problem}");
    }
    if let Some(replication) = &status.replication {
        let _ = writeln!(
            out,
            "sync      {} ({}), last ack {} ms ago",
            if replication.connected {
                "connected"
            } else {
                "not connected"
            },
            if replication.caught_up {
                "caught up"
            } else {
                "catching up"
            },
            or_dash(replication.last_ack_age_ms)
        );
        if !replication.tables.is_empty() {
            let line = replication
                .tables
                .iter()
                .map(|t| {
                    format!(
                        "{} {}/{}",
                        t.label,
                        t.local_entries,
                        or_dash(t.peer_entries)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "tables    local/peer entries: {line}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<22} {:<20} {:<12} {:<5} {:<16} {:<16} {:>6} {:>7}",
        "SERVICE / SERVER", "ADDRESS", "PORTS", "MODE", "PERSISTENCE", "STATE", "CONNS", "STICK"
    );
    for service in &status.services {
        let _ = writeln!(
            out,
            "{:<22} {:<20} {:<12} {:<5} {:<16} {:<16} {:>6} {:>7}",
            service.label,
            service.vip.to_string(),
            list(&service.ports),
            service.mode.as_str(),
            service.persistence.mode.as_str(),
            format!("{}/{} up", service.servers_up(), service.servers.len()),
            service.current_connections,
            service.stick_table_size,
        );
        for error in &service.bind_errors {
            let _ = writeln!(out, "  NOT LISTENING: {error}");
        }
        for server in &service.servers {
            let state = format!(
                "{}/{} w{}",
                server.health, server.admin_state, server.weight
            );
            let _ = writeln!(
                out,
                "  {:<20} {:<20} {:<12} {:<5} {:<16} {:<16} {:>6}",
                server.label,
                server.address.to_string(),
                or_dash(server.port),
                "",
                "",
                state,
                server.current_connections,
            );
            // Where a drain or halt came from (an online server needs no explanation).
            if let Some(source) = &server.admin_source
                && server.admin_state != AdminState::Online
            {
                let _ = writeln!(out, "    {} by {source}", server.admin_state);
            }
        }
    }
    out
}

/// The admin endpoint's lines: where it listens, how to check its certificate, the socket.
pub fn endpoint_text(endpoint: &AdminEndpoint) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "admin     {}{}",
        endpoint.url,
        if endpoint.credentials {
            ""
        } else {
            " (no credentials: POSTs only over the socket)"
        }
    );
    if let Some(fingerprint) = &endpoint.tls_fingerprint {
        let _ = writeln!(
            out,
            "          certificate SHA-256 {fingerprint}{}",
            if endpoint.self_signed {
                " (self-signed: pin it with --admin-fingerprint)"
            } else {
                ""
            }
        );
    }
    if let Some(socket) = &endpoint.socket {
        let _ = writeln!(out, "          local socket {socket}");
    }
    out
}

fn short_digest(digest: &str) -> String {
    digest.chars().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_status::{AdminSource, AdminVia};

    /// The documented example (docs/admin-api.md), as `tandem status` reads it from a node.
    fn documented() -> Status {
        let doc = include_str!("../../../docs/admin-api.md");
        let section = &doc[doc.find("## Status document").unwrap_or(0)..];
        let start = section
            .find("```json\n")
            .map_or(0, |i| i + "```json\n".len());
        let end = start + section[start..].find("```").unwrap_or(0);
        serde_json::from_str(&section[start..end]).expect("the documented status document")
    }

    /// Where `header` starts in the table header, and the row starting with `row`.
    fn column<'a>(text: &'a str, header: &str, row: &str) -> (usize, &'a str) {
        let head = text
            .lines()
            .find(|l| l.starts_with("SERVICE / SERVER"))
            .expect("table header");
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(row))
            .expect("row");
        (head.find(header).expect("column"), line)
    }

    #[test]
    fn persistence_has_its_own_column_apart_from_the_state() {
        let text = status_text(&documented());
        let (persistence, service) = column(&text, "PERSISTENCE", "mysql");
        assert_eq!(service.find("last-successful"), Some(persistence), "{text}");
        let (state, service) = column(&text, "STATE", "mysql");
        assert_eq!(service.find("1/1 up"), Some(state), "{text}");
        // A server's state is under STATE, nothing of it under PERSISTENCE.
        let (_, server) = column(&text, "STATE", "Overcloud-controller-1");
        let at = server.find("up/online").expect("server state");
        assert!(at >= state, "{text}");
        assert!(!server.contains("last-successful"));
    }

    #[test]
    fn a_drained_server_says_who_drained_it_and_how_the_node_knows() {
        let mut status = documented();
        let server = &mut status.services[0].servers[0];
        server.admin_state = AdminState::Drain;
        server.admin_source = Some(AdminSource {
            via: AdminVia::Replicated,
            set_by: "lb2".into(),
            at_unix_ms: 1_796_572_522_000,
        });
        let text = status_text(&status);
        assert!(
            text.contains(
                "    drain by replicated from the peer, set by an operator on lb2 at \
                 2026-12-06 15:55:22 UTC\n"
            ),
            "{text}"
        );
        // Online servers carry no such line (and the documented VIP conflict's "claimed by" line goes too).
        status.services[0].servers[0].admin_state = AdminState::Online;
        status.node.vip_conflicts = Default::default();
        assert!(!status_text(&status).contains(" by "));
    }
}
