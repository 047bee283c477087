//! The System Overview page: the appliance's view of both nodes of the pair, every virtual service
//! and real server, with Drain / Halt / Online per server and Takeover / Release / Reload, each
//! behind a confirmation.
//!
//! The page is self-contained (its CSS and script are compiled in: a node may have no Internet) and
//! has one renderer, the script (`page.js`): the server embeds the status document in the page for
//! the first paint, and the script then reads `GET /api/status` every 2 s and updates the DOM in
//! place. Actions are POSTs with `X-Requested-By`, as the listener's rules demand.

use std::fmt::Write;
use tandem_status::Status;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");
/// The `id` of the `<script type="application/json">` element that carries the document.
pub const DOCUMENT_ELEMENT_ID: &str = "tandem-status";

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

/// The document as JSON that can sit inside a `<script>` element: every `<` is written as
/// `\u003c` (still the same JSON string), so no label can close the element or open a comment.
fn embedded_json(status: &Status) -> String {
    serde_json::to_string(status)
        .unwrap_or_else(|_| "null".to_owned())
        .replace('<', "\\u003c")
}

/// Render the overview page for one status document.
pub fn render_overview(status: &Status) -> String {
    let name = escape(&status.node.name);
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tandem {name} - System Overview</title>
<style>
{STYLE}</style></head>
<body>
<header><h1>System Overview &mdash; <span id="node-name">{name}</span></h1><span class="spacer"></span>
<span id="refreshed" class="refresh">refreshes every 2 s</span>
<button type="button" data-action="takeover">Takeover</button><button type="button" data-action="release">Release</button><button type="button" data-action="reload">Reload</button></header>
<main id="app"><noscript>This page needs JavaScript to show the status; <a href="/api/status">/api/status</a> has it as JSON.</noscript></main>
<div id="confirm" hidden role="dialog" aria-modal="true" aria-labelledby="confirm-text"><div class="box">
<p id="confirm-text"></p>
<label id="confirm-close-box" hidden><input type="checkbox" id="confirm-close"> also close its existing connections</label>
<div class="buttons"><button type="button" id="confirm-cancel">Cancel</button> <button type="button" id="confirm-ok" class="primary">OK</button></div>
</div></div>
<div id="notice" hidden role="status"></div>
<script type="application/json" id="{DOCUMENT_ELEMENT_ID}">{document}</script>
<script>
{SCRIPT}</script>
</body></html>
"#,
        document = embedded_json(status),
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

    /// A document as the API serves it (built from JSON so that the test reads like
    /// docs/admin-api.md and keeps compiling when optional fields are added).
    fn document(node_name: &str, service_label: &str) -> Status {
        let value = serde_json::json!({
            "node": { "name": node_name, "role": "primary", "address": "192.168.1.21",
                      "state": "active", "state_since_ms": 5123, "fault": null, "ping": "notconfigured",
                      "manage_vips": true, "interface": "eth0", "vips": ["192.168.1.250"],
                      "vips_held": ["192.168.1.250"], "uptime_s": 60,
                      "peer": { "name": "lb2", "address": "192.168.1.22", "role": "secondary",
                                "state": "standby", "alive": true, "last_heard_ms": 120,
                                "holds_vips": false, "config_generation": 3, "config_digest": "abc",
                                "servers_up": 1, "servers_total": 1 } },
            "config": { "generation": 3, "digest": "abc", "sync": "in sync" },
            "cluster": { "takeovers": 0, "releases": 0, "split_brains": 0, "warn_time_exceeded": 0,
                         "vip_failures": 0, "last_event": null,
                         "heartbeats": { "sent": 1, "send_errors": 0, "received": 1, "rejected": {} } },
            "replication": null,
            "services": [ { "label": service_label, "vip": "192.168.1.250", "ports": [3306], "mode": "tcp",
                "balance": "weighted-least-connections",
                "persistence": { "mode": "last-successful", "timeout_s": 0, "table_size": 1000, "cookie_name": "" },
                "current_connections": 4, "total_connections": 9, "bytes_in": 0, "bytes_out": 0, "failures": 0,
                "bind_errors": ["192.168.1.250:3306: Address already in use"], "stick_table_size": 1,
                "servers": [ { "label": "Overcloud-controller-1", "address": "192.168.1.150", "port": 3306,
                    "weight": 100, "health": "up", "health_reason": "connect ok", "admin_state": "drain",
                    "admin_source": { "via": "operator", "set_by": "lb1", "at_unix_ms": 0 },
                    "current_connections": 4, "total_connections": 9, "bytes_in": 0, "bytes_out": 0,
                    "check_failures": 0, "connect_failures": 0, "idle_connections": 0, "last_check": null } ] } ]
        });
        serde_json::from_value(value).expect("the test document matches the status type")
    }

    /// The document the page carries for its first paint, read back.
    fn embedded(html: &str) -> Status {
        let open = format!(r#"<script type="application/json" id="{DOCUMENT_ELEMENT_ID}">"#);
        let start = html.find(&open).expect("the page embeds the document") + open.len();
        let end = start
            + html[start..]
                .find("</script>")
                .expect("the element is closed");
        serde_json::from_str(&html[start..end]).expect("the embedded document is JSON")
    }

    #[test]
    fn the_page_carries_the_whole_document_for_its_first_paint() {
        let status = document("lb1", "mysql");
        let html = render_overview(&status);
        assert_eq!(embedded(&html), status);
        assert!(html.contains("<title>tandem lb1 - System Overview</title>"));
        assert!(html.contains(r#"<span id="node-name">lb1</span>"#));
    }

    #[test]
    fn labels_cannot_break_out_of_the_page() {
        let hostile = "</script><script>alert(1)</script><!--";
        let status = document("<b>lb1</b>", hostile);
        let html = render_overview(&status);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<b>lb1"), "{html}");
        assert!(html.contains("&lt;b&gt;lb1&lt;/b&gt;"));
        // The label survives intact inside the JSON, and the page's own scripts are still two.
        assert_eq!(embedded(&html), status);
        assert_eq!(html.matches("<script").count(), 2);
        // The script builds the DOM from text only.
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("insertAdjacentHTML"));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let html = render_overview(&document("lb1", "mysql"));
        for outside in [
            "http://", "https://", "src=", "<link", "@import", "url(", "<iframe", "//cdn",
        ] {
            assert!(!html.contains(outside), "the page refers to {outside:?}");
        }
    }

    #[test]
    fn the_script_reads_the_api_and_sends_what_the_listener_demands() {
        assert!(SCRIPT.contains(r#"fetch("/api/status""#));
        assert!(SCRIPT.contains(r#"headers: { "X-Requested-By": "tandem-page" }"#));
        assert!(SCRIPT.matches(r#"credentials: "same-origin""#).count() == 2);
        for path in [
            "/api/servers/${encodeURIComponent(service)}/${encodeURIComponent(server)}/${action}",
            "/api/${action}",
        ] {
            assert!(SCRIPT.contains(path), "{path}");
        }
        // Every action button is answered by a confirmation first.
        let html = render_overview(&document("lb1", "mysql"));
        for action in ["takeover", "release", "reload"] {
            assert!(html.contains(&format!(r#"data-action="{action}""#)));
        }
        assert!(html.contains(r#"id="confirm-ok""#) && html.contains(r#"id="confirm-cancel""#));
    }
}
