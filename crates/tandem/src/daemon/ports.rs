//! The node's own fixed ports (sync, heartbeat) against the kernel's ephemeral port range.
//!
//! An outgoing connection (a health check, a proxied request) takes its local port from
//! `net.ipv4.ip_local_port_range`. If that range covers the sync port and the port is not in
//! `net.ipv4.ip_local_reserved_ports`, a connection from the node's address can hold it, and a
//! restarting daemon then cannot bind its sync listener ("Address already in use"). The lab found
//! this with a widened range (1024-65000); operators who widen it for busy proxies meet the same.

use std::ops::RangeInclusive;

const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// `ip_local_port_range`'s text ("32768\t60999\n").
fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    let low = bounds.next()?.ok()?;
    let high = bounds.next()?.ok()?;
    Some(low..=high)
}

/// `ip_local_reserved_ports`' text ("6694,7778,8000-8010\n"; empty when none). Unparsable items are skipped:
/// the worst outcome is a warning too many.
fn parse_reserved(text: &str) -> Vec<RangeInclusive<u16>> {
    text.trim()
        .split(',')
        .filter_map(|item| {
            let item = item.trim();
            match item.split_once('-') {
                Some((low, high)) => Some(low.parse().ok()?..=high.parse().ok()?),
                None => item.parse().ok().map(|port| port..=port),
            }
        })
        .collect()
}

/// The ports of `ports` that an outgoing connection may take as its local port.
fn exposed<'a>(
    ports: &[(&'a str, u16)],
    range: &RangeInclusive<u16>,
    reserved: &[RangeInclusive<u16>],
) -> Vec<(&'a str, u16)> {
    ports
        .iter()
        .copied()
        .filter(|(_, port)| range.contains(port) && !reserved.iter().any(|r| r.contains(port)))
        .collect()
}

/// The advice for `ports` (empty when every port is safe), read from this network namespace's sysctls.
pub(super) fn ephemeral_overlap(ports: &[(&str, u16)]) -> Option<String> {
    let range = parse_range(&std::fs::read_to_string(PORT_RANGE).ok()?)?;
    let reserved = parse_reserved(&std::fs::read_to_string(RESERVED_PORTS).unwrap_or_default());
    advice(&exposed(ports, &range, &reserved), &range)
}

fn advice(exposed: &[(&str, u16)], range: &RangeInclusive<u16>) -> Option<String> {
    if exposed.is_empty() {
        return None;
    }
    let named: Vec<String> = exposed
        .iter()
        .map(|(name, port)| format!("{name} port {port}"))
        .collect();
    let list: Vec<String> = exposed.iter().map(|(_, port)| port.to_string()).collect();
    Some(format!(
        "{} inside the ephemeral port range {}-{}: an outgoing connection can hold it and a restart then fails \
         with 'Address already in use'; reserve it: sysctl -w net.ipv4.ip_local_reserved_ports={} (add to any \
         ports already reserved; persist it in /etc/sysctl.d)",
        named.join(", "),
        range.start(),
        range.end(),
        list.join(",")
    ))
}

/// Warns once at start-up when the node's fixed ports are exposed (see the module doc).
pub(super) fn warn_if_ephemeral(ports: &[(&str, u16)]) {
    if let Some(advice) = ephemeral_overlap(ports) {
        tracing::warn!("{advice}");
    }
}

/// The hint appended to a bind failure of a fixed port.
pub(super) fn bind_hint(error: &std::io::Error, ports: &[(&str, u16)]) -> String {
    if error.kind() != std::io::ErrorKind::AddrInUse {
        return String::new();
    }
    match ephemeral_overlap(ports) {
        Some(advice) => format!(" ({advice})"),
        None => " (another process listens there: `ss -ltnp`)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_texts_parse() {
        assert_eq!(parse_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_range("garbage"), None);
        assert_eq!(parse_range("1024"), None);
        assert_eq!(parse_reserved("\n"), Vec::<RangeInclusive<u16>>::new());
        assert_eq!(
            parse_reserved("6694,7778-7780,x,9-\n"),
            vec![6694..=6694, 7778..=7780]
        );
    }

    #[test]
    fn a_port_in_the_range_and_not_reserved_is_exposed() {
        let ports = [("sync", 7778), ("heartbeat", 6694)];
        assert_eq!(exposed(&ports, &(32768..=60999), &[]), vec![]);
        assert_eq!(
            exposed(&ports, &(1024..=65000), &[]),
            vec![("sync", 7778), ("heartbeat", 6694)]
        );
        assert_eq!(
            exposed(&ports, &(1024..=65000), &[7770..=7780]),
            vec![("heartbeat", 6694)]
        );
        assert_eq!(
            exposed(&ports, &(1024..=65000), &[7778..=7778, 6694..=6694]),
            vec![]
        );
    }

    #[test]
    fn the_advice_names_the_ports_and_the_sysctl() {
        let text = advice(&[("sync", 7778), ("heartbeat", 6694)], &(1024..=65000)).unwrap();
        assert!(
            text.contains("sync port 7778, heartbeat port 6694"),
            "{text}"
        );
        assert!(text.contains("1024-65000"), "{text}");
        assert!(
            text.contains("net.ipv4.ip_local_reserved_ports=7778,6694"),
            "{text}"
        );
        assert_eq!(advice(&[], &(1024..=65000)), None);
    }
}
