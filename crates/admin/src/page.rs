//! The System Overview page: the appliance's view of every virtual service and real server, with
//! Drain / Halt / Online buttons, rendered server-side from the status document.

use serde_json::Value;
use std::fmt::Write;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A field of the status document as display text ("-" when absent).
fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => escape(s),
        Some(Value::Array(items)) => escape(
            &items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Some(other) => escape(&other.to_string()),
    }
}

fn state_class(state: &str) -> &'static str {
    match state {
        "active" | "up" | "online" | "in sync" => "good",
        "standby" | "drain" => "warn",
        "fault" | "down" | "halt" => "bad",
        _ => "",
    }
}

/// Render the overview page for one status document.
pub fn render_overview(status: &Value) -> String {
    let node = status.get("node").cloned().unwrap_or(Value::Null);
    let peer = node.get("peer").cloned().unwrap_or(Value::Null);
    let config = status.get("config").cloned().unwrap_or(Value::Null);
    let state = node
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let mut html = String::with_capacity(32 * 1024);
    let _ = write!(
        html,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>tandem {name} - System Overview</title>
<meta http-equiv="refresh" content="5">
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse;width:100%;margin-bottom:1em}}
th,td{{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left}} th{{background:#f3f3f3}}
tr.vs td{{background:#eef3f9;font-weight:600}} .good{{color:#18794e}} .warn{{color:#a35200}} .bad{{color:#c0262d;font-weight:700}}
button{{margin-right:.3em}} .meta td{{border:none;padding:.1em .6em}}
</style></head><body>
<h1>System Overview &mdash; {name}</h1>
<table class="meta">
<tr><td>Role</td><td>{role}</td><td>State</td><td class="{class}">{state}</td></tr>
<tr><td>Peer</td><td>{peer_name}</td><td>Peer state</td><td>{peer_state} (heard {peer_age} ms ago)</td></tr>
<tr><td>VIPs held</td><td>{vips}</td><td>Config</td><td>generation {generation}, digest {digest}, {sync}</td></tr>
</table>
"#,
        name = text(&node, "name"),
        role = text(&node, "role"),
        class = state_class(state),
        state = escape(state),
        peer_name = text(&peer, "name"),
        peer_state = text(&peer, "state"),
        peer_age = text(&peer, "last_heard_ms"),
        vips = text(&node, "vips_held"),
        generation = text(&config, "generation"),
        digest = text(&config, "digest"),
        sync = text(&config, "sync"),
    );
    html.push_str(
        "<table><tr><th>VIRTUAL SERVICE</th><th>IP</th><th>PORTS</th><th>CONNS</th><th>PROTOCOL</th>\
         <th>PERSISTENCE</th><th>STATE</th><th></th></tr>\n",
    );
    let empty = Vec::new();
    let services = status
        .get("services")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for service in services {
        let label = service.get("label").and_then(Value::as_str).unwrap_or("");
        let servers = service
            .get("servers")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let up = servers
            .iter()
            .filter(|s| s.get("health").and_then(Value::as_str) == Some("up"))
            .count();
        let service_state = if up == 0 { "down" } else { "up" };
        let persistence = service
            .get("persistence")
            .map(|p| text(p, "mode"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            html,
            r#"<tr class="vs"><td>{label}</td><td>{vip}</td><td>{ports}</td><td>{conns}</td><td>{mode}</td><td>{persistence}</td><td class="{class}">{up}/{total} up</td><td>{errors}</td></tr>"#,
            label = escape(label),
            vip = text(service, "vip"),
            ports = text(service, "ports"),
            conns = text(service, "current_connections"),
            mode = text(service, "mode").to_uppercase(),
            class = state_class(service_state),
            total = servers.len(),
            errors = text(service, "bind_error").replace('-', ""),
        );
        for server in servers {
            let server_label = server.get("label").and_then(Value::as_str).unwrap_or("");
            let health = server.get("health").and_then(Value::as_str).unwrap_or("?");
            let admin = server
                .get("admin_state")
                .and_then(Value::as_str)
                .unwrap_or("online");
            let shown = if admin == "online" { health } else { admin };
            let target = format!(
                "{}/{}",
                escape(&urlencode(label)),
                escape(&urlencode(server_label))
            );
            let _ = writeln!(
                html,
                r#"<tr><td>&nbsp;&nbsp;{server_label}</td><td>{address}</td><td>{port}</td><td>{conns}</td><td>weight {weight}</td><td></td><td class="{class}">{shown}</td><td><button onclick="act('{target}','drain')">Drain</button><button onclick="act('{target}','halt')">Halt</button><button onclick="act('{target}','online')">Online</button></td></tr>"#,
                server_label = escape(server_label),
                address = text(server, "address"),
                port = text(server, "port"),
                conns = text(server, "current_connections"),
                weight = text(server, "weight"),
                class = state_class(shown),
                shown = escape(shown),
            );
        }
    }
    html.push_str(
        "</table>\n<script>function act(t,a){fetch('/api/servers/'+t+'/'+a,{method:'POST'})\
         .then(r=>r.json()).then(j=>{if(!j.ok)alert(j.error);location.reload()})}</script>\n</body></html>\n",
    );
    html
}

/// Percent-encode a label for a URL path segment (unreserved characters kept).
pub fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_services_servers_and_escapes_labels() {
        let status = serde_json::json!({
            "node": {"name": "lb1", "role": "primary", "state": "active", "vips_held": ["192.168.1.250"],
                     "peer": {"name": "lb2", "state": "standby", "last_heard_ms": 12}},
            "config": {"generation": 3, "digest": "abc", "sync": "in sync"},
            "services": [{"label": "mysql<x>", "vip": "192.168.1.250", "ports": [3306], "mode": "tcp",
                          "persistence": {"mode": "last-successful"}, "current_connections": 4,
                          "servers": [{"label": "Overcloud-controller-1", "address": "192.168.1.150", "port": 3306,
                                       "weight": 100, "health": "up", "admin_state": "drain", "current_connections": 4}]}]
        });
        let html = render_overview(&status);
        assert!(html.contains("mysql&lt;x&gt;"));
        assert!(html.contains("Overcloud-controller-1"));
        assert!(html.contains("192.168.1.250"));
        assert!(html.contains(r#"class="warn">drain"#));
        assert!(html.contains("mysql%3Cx%3E/Overcloud-controller-1"));
        assert!(html.contains("TCP"));
    }

    #[test]
    fn tolerates_an_empty_document() {
        let html = render_overview(&Value::Null);
        assert!(html.contains("System Overview"));
    }
}
