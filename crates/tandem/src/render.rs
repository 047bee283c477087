//! Human-readable forms of the status document for `tandem status`.

use std::fmt::Write;
use tandem_status::{AdminEndpoint, Status};

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
    match &node.peer {
        None => {
            let _ = writeln!(out, "peer      none (standalone)");
        }
        Some(peer) => {
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
    let _ = writeln!(out, "vips      {}", list(&node.vips_held));
    let _ = writeln!(
        out,
        "config    generation {}, digest {}, {}",
        config.generation,
        short_digest(&config.digest),
        config.sync
    );
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
        "{:<22} {:<20} {:<12} {:<5} {:<16} {:>6} {:>7}",
        "SERVICE / SERVER", "ADDRESS", "PORTS", "MODE", "STATE", "CONNS", "STICK"
    );
    for service in &status.services {
        let _ = writeln!(
            out,
            "{:<22} {:<20} {:<12} {:<5} {:<16} {:>6} {:>7}",
            service.label,
            service.vip.to_string(),
            list(&service.ports),
            service.mode.as_str(),
            service.persistence.mode.as_str(),
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
                "  {:<20} {:<20} {:<12} {:<5} {:<16} {:>6}",
                server.label,
                server.address.to_string(),
                or_dash(server.port),
                "",
                state,
                server.current_connections,
            );
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
