//! Human-readable forms of the status document for `tandem status`.

use serde_json::Value;
use std::fmt::Write;

fn field(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "none".to_owned(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| item.to_string())
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

/// The status document as an operator reads it on a terminal.
pub fn status_text(status: &Value) -> String {
    let mut out = String::new();
    let node = &status["node"];
    let peer = &node["peer"];
    let config = &status["config"];
    let replication = &status["replication"];
    let _ = writeln!(
        out,
        "node      {} ({}), state {}",
        field(node, "name"),
        field(node, "role"),
        field(node, "state").to_uppercase()
    );
    if peer.is_null() {
        let _ = writeln!(out, "peer      none (standalone)");
    } else {
        let _ = writeln!(
            out,
            "peer      {} at {}, state {}, last heard {} ms ago",
            field(peer, "name"),
            field(peer, "address"),
            field(peer, "state"),
            field(peer, "last_heard_ms")
        );
    }
    let _ = writeln!(out, "vips      {}", field(node, "vips_held"));
    let _ = writeln!(
        out,
        "config    generation {}, digest {}, {}",
        field(config, "generation"),
        short_digest(&field(config, "digest")),
        field(config, "sync")
    );
    if !replication.is_null() {
        let _ = writeln!(
            out,
            "sync      {} ({}), last ack {} ms ago",
            if replication["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "not connected"
            },
            if replication["caught_up"].as_bool() == Some(true) {
                "caught up"
            } else {
                "catching up"
            },
            field(replication, "last_ack_age_ms")
        );
    }
    if let Some(tables) = replication["tables"].as_array().filter(|t| !t.is_empty()) {
        let line = tables
            .iter()
            .map(|t| {
                format!(
                    "{} {}/{}",
                    field(t, "label"),
                    field(t, "local_entries"),
                    field(t, "peer_entries")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "tables    local/peer entries: {line}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<22} {:<20} {:<12} {:<5} {:<16} {:>6} {:>7}",
        "SERVICE / SERVER", "ADDRESS", "PORTS", "MODE", "STATE", "CONNS", "STICK"
    );
    let empty = Vec::new();
    for service in status["services"].as_array().unwrap_or(&empty) {
        let _ = writeln!(
            out,
            "{:<22} {:<20} {:<12} {:<5} {:<16} {:>6} {:>7}",
            field(service, "label"),
            field(service, "vip"),
            field(service, "ports"),
            field(service, "mode"),
            service
                .get("persistence")
                .map(|p| field(p, "mode"))
                .unwrap_or_default(),
            field(service, "current_connections"),
            field(service, "stick_table_size"),
        );
        for server in service["servers"].as_array().unwrap_or(&empty) {
            let state = format!(
                "{}/{} w{}",
                field(server, "health"),
                field(server, "admin_state"),
                field(server, "weight")
            );
            let _ = writeln!(
                out,
                "  {:<20} {:<20} {:<12} {:<5} {:<16} {:>6}",
                field(server, "label"),
                field(server, "address"),
                field(server, "port"),
                "",
                state,
                field(server, "current_connections"),
            );
        }
    }
    out
}

fn short_digest(digest: &str) -> String {
    digest.chars().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_pair_status() {
        let status = serde_json::json!({
            "node": {"name": "lb1", "role": "primary", "state": "active", "vips_held": ["192.168.1.250"],
                     "peer": {"name": "lb2", "address": "192.168.1.22", "state": "standby", "last_heard_ms": 40}},
            "config": {"generation": 2, "digest": "00112233445566778899", "sync": "in sync"},
            "services": [{"label": "mysql", "vip": "192.168.1.250", "ports": [3306], "mode": "tcp",
                          "persistence": {"mode": "last-successful"}, "current_connections": 1, "stick_table_size": 1,
                          "servers": [{"label": "Overcloud-controller-1", "address": "192.168.1.150", "port": 3306,
                                       "weight": 100, "health": "up", "admin_state": "online"}]}]
        });
        let text = status_text(&status);
        assert!(text.contains("state ACTIVE"));
        assert!(text.contains("lb2 at 192.168.1.22, state standby, last heard 40 ms ago"));
        assert!(text.contains("generation 2, digest 0011223344556677, in sync"));
        assert!(text.contains("Overcloud-controller-1"));
        assert!(text.contains("up/online w100"));
    }
}
