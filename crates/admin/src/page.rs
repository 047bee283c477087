//! The System Overview page: the appliance's view of every virtual service and real server, with
//! Drain / Halt / Online buttons, rendered server-side from the status document.

use std::fmt::Write;
use tandem_status::{AdminState, Health, Status};

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

/// A list as display text, escaped.
fn list<T: ToString>(items: &[T]) -> String {
    escape(
        &items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    )
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
pub fn render_overview(status: &Status) -> String {
    let node = &status.node;
    let config = &status.config;
    let state = node.state.as_str();
    let (peer_name, peer_state, peer_age) = match &node.peer {
        Some(peer) => (
            escape(&peer.name),
            peer.state.as_str(),
            peer.last_heard_ms.to_string(),
        ),
        None => ("-".to_owned(), "-", "-".to_owned()),
    };
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
        name = escape(&node.name),
        role = node.role,
        class = state_class(state),
        vips = list(&node.vips_held),
        generation = config.generation,
        digest = escape(&config.digest),
        sync = escape(&config.sync.to_string()),
    );
    html.push_str(
        "<table><tr><th>VIRTUAL SERVICE</th><th>IP</th><th>PORTS</th><th>CONNS</th><th>PROTOCOL</th>\
         <th>PERSISTENCE</th><th>STATE</th><th></th></tr>\n",
    );
    for service in &status.services {
        let label = &service.label;
        let up = service.servers_up();
        let service_state = if up == 0 { "down" } else { "up" };
        let _ = writeln!(
            html,
            r#"<tr class="vs"><td>{label}</td><td>{vip}</td><td>{ports}</td><td>{conns}</td><td>{mode}</td><td>{persistence}</td><td class="{class}">{up}/{total} up</td><td class="bad">{errors}</td></tr>"#,
            label = escape(label),
            vip = service.vip,
            ports = list(&service.ports),
            conns = service.current_connections,
            mode = service.mode.as_str().to_uppercase(),
            persistence = service.persistence.mode,
            class = state_class(service_state),
            total = service.servers.len(),
            errors = list(&service.bind_errors),
        );
        for server in &service.servers {
            let shown = match server.admin_state {
                AdminState::Online => match server.health {
                    Health::Up => "up",
                    Health::Down => "down",
                },
                other => other.as_str(),
            };
            let target = format!(
                "{}/{}",
                escape(&urlencode(label)),
                escape(&urlencode(&server.label))
            );
            let _ = writeln!(
                html,
                r#"<tr><td>&nbsp;&nbsp;{server_label}</td><td>{address}</td><td>{port}</td><td>{conns}</td><td>weight {weight}</td><td></td><td class="{class}"{source}>{shown}</td><td><button onclick="act('{target}','drain')">Drain</button><button onclick="act('{target}','halt')">Halt</button><button onclick="act('{target}','online')">Online</button></td></tr>"#,
                server_label = escape(&server.label),
                address = server.address,
                port = server
                    .port
                    .map_or_else(|| "-".to_owned(), |port| port.to_string()),
                conns = server.current_connections,
                weight = server.weight,
                class = state_class(shown),
                // Who set a drain or halt, and how this node knows it: a tooltip.
                source = server
                    .admin_source
                    .as_ref()
                    .map_or_else(String::new, |source| {
                        format!(
                            r#" title="{} by {}""#,
                            server.admin_state,
                            escape(&source.to_string())
                        )
                    }),
            );
        }
    }
    // The header X-Requested-By is what the listener demands of a POST (a cross-site page cannot
    // send it); every answer is JSON, but a proxy in between might answer otherwise, so the body
    // is read as text and shown as it is when it is not JSON.
    html.push_str(
        "</table>\n<script>function act(t,a){fetch('/api/servers/'+t+'/'+a,\
         {method:'POST',credentials:'same-origin',headers:{'X-Requested-By':'tandem-page'}})\
         .then(r=>r.text().then(b=>{let j;try{j=JSON.parse(b)}catch(e){j={ok:false,error:b.trim()||r.statusText}}\
         if(!r.ok||!j.ok){let m=j.error||('HTTP '+r.status);\
         if(r.status==401)m='Not signed in: '+m;else if(r.status==403)m='Refused: '+m;\
         alert(m)}location.reload()}))\
         .catch(e=>alert('The node did not answer: '+e))}</script>\n</body></html>\n",
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
    use std::net::IpAddr;
    use tandem_status::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    fn server(label: &str, health: Health, admin_state: AdminState) -> Server {
        Server {
            label: label.into(),
            address: ip("192.168.1.150"),
            port: Some(3306),
            weight: 100,
            health,
            health_reason: String::new(),
            admin_state,
            admin_source: None,
            current_connections: 4,
            total_connections: 0,
            bytes_in: 0,
            bytes_out: 0,
            check_failures: 0,
            connect_failures: 0,
            idle_connections: 0,
            last_check: None,
        }
    }

    #[test]
    fn the_state_cell_names_who_set_it() {
        let mut drained = server("w1", Health::Up, AdminState::Drain);
        drained.admin_source = Some(AdminSource {
            via: AdminVia::Operator,
            set_by: "lb<2>".into(),
            at_unix_ms: 0,
        });
        let status = document(vec![service("web", vec![drained], Vec::new())], None);
        let html = render_overview(&status);
        assert!(
            html.contains(
                r#"class="warn" title="drain by operator on lb&lt;2&gt; at 1970-01-01 00:00:00 UTC">drain<"#
            ),
            "{html}"
        );
    }

    fn document(services: Vec<Service>, peer: Option<Peer>) -> Status {
        Status {
            node: Node {
                name: "lb1".into(),
                role: Role::Primary,
                address: ip("192.168.1.21"),
                state: NodeState::Active,
                state_since_ms: 0,
                fault: None,
                ping: Ping::NotConfigured,
                manage_vips: true,
                interface: "eth0".into(),
                vips: vec![ip("192.168.1.250")],
                vips_held: vec![ip("192.168.1.250")],
                uptime_s: 0,
                peer,
            },
            config: Config {
                generation: 3,
                digest: "abc".into(),
                sync: ConfigSync::InSync,
            },
            cluster: Cluster {
                takeovers: 0,
                releases: 0,
                split_brains: 0,
                warn_time_exceeded: 0,
                vip_failures: 0,
                last_event: None,
                heartbeats: Heartbeats {
                    sent: 0,
                    send_errors: 0,
                    received: 0,
                    rejected: Default::default(),
                },
                wire: Default::default(),
            },
            replication: None,
            services,
        }
    }

    fn service(label: &str, servers: Vec<Server>, bind_errors: Vec<String>) -> Service {
        Service {
            label: label.into(),
            vip: ip("192.168.1.250"),
            ports: vec![3306],
            mode: Mode::Tcp,
            balance: Balance::WeightedLeastConnections,
            persistence: Persistence {
                mode: PersistenceMode::LastSuccessful,
                timeout_s: 0,
                table_size: 1000,
                cookie_name: String::new(),
            },
            current_connections: 4,
            total_connections: 0,
            bytes_in: 0,
            bytes_out: 0,
            failures: 0,
            bind_errors,
            stick_table_size: 0,
            servers,
        }
    }

    #[test]
    fn renders_services_servers_and_escapes_labels() {
        let peer = Peer {
            name: "lb2".into(),
            address: Some(ip("192.168.1.22")),
            role: Role::Secondary,
            state: PeerState::Heard(NodeState::Standby),
            alive: true,
            last_heard_ms: 12,
            holds_vips: false,
            config_generation: 3,
            config_digest: "abc".into(),
            servers_up: 1,
            servers_total: 1,
        };
        let status = document(
            vec![service(
                "mysql<x>",
                vec![server(
                    "Overcloud-controller-1",
                    Health::Up,
                    AdminState::Drain,
                )],
                Vec::new(),
            )],
            Some(peer),
        );
        let html = render_overview(&status);
        assert!(html.contains("mysql&lt;x&gt;"));
        assert!(html.contains("Overcloud-controller-1"));
        assert!(html.contains("192.168.1.250"));
        assert!(html.contains(r#"class="warn">drain"#));
        assert!(html.contains("mysql%3Cx%3E/Overcloud-controller-1"));
        assert!(html.contains("TCP"));
        assert!(html.contains("standby (heard 12 ms ago)"));
        assert!(html.contains("'X-Requested-By':'tandem-page'"));
        assert!(html.contains("r.status==401") && html.contains("r.status==403"));
    }

    #[test]
    fn shows_bind_errors_and_down_servers() {
        let status = document(
            vec![service(
                "web",
                vec![server("w1", Health::Down, AdminState::Online)],
                vec!["192.168.1.250:3306: Address already in use".into()],
            )],
            None,
        );
        let html = render_overview(&status);
        assert!(html.contains("192.168.1.250:3306: Address already in use"));
        assert!(html.contains(r#"class="bad">down"#));
        assert!(html.contains("0/1 up"));
    }

    #[test]
    fn renders_a_standalone_node_without_services() {
        let html = render_overview(&document(Vec::new(), None));
        assert!(html.contains("System Overview"));
        assert!(html.contains("<td>Peer</td><td>-</td>"));
    }
}
