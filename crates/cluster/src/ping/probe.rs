//! The probes themselves (tokio sockets, socket2 for the ICMP ones): built with the `driver` feature only.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::{EchoProbe, PingNodes};

/// Traceroute's first port: nothing listens there, so a live host answers "port unreachable".
const UDP_PROBE_PORT: u16 = 33434;

/// Probes one address with a fresh random [`EchoProbe`]; `true` if it answered within `timeout`.
pub async fn probe(addr: IpAddr, timeout: Duration) -> bool {
    probe_rtt(addr, timeout).await.is_some()
}

/// As [`probe`], with the round trip of the answer: from just before the request was sent (socket setup
/// included, which costs microseconds) until the reply was read.
pub async fn probe_rtt(addr: IpAddr, timeout: Duration) -> Option<Duration> {
    let echo = EchoProbe::random()?;
    let start = Instant::now();
    match tokio::time::timeout(timeout, probe_icmp(addr, echo)).await {
        Ok(Ok(answered)) => return answered.then(|| start.elapsed()),
        Ok(Err(_)) => {}       // no ICMP socket available: fall back to UDP
        Err(_) => return None, // no reply in time
    }
    let start = Instant::now();
    match tokio::time::timeout(timeout, probe_udp(addr)).await {
        Ok(Ok(true)) => Some(start.elapsed()),
        _ => None,
    }
}

async fn probe_icmp(addr: IpAddr, echo: EchoProbe) -> io::Result<bool> {
    let v6 = addr.is_ipv6();
    let (domain, protocol) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let (socket, raw) = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(s) => (s, true),
        Err(_) => (Socket::new(domain, Type::DGRAM, Some(protocol))?, false),
    };
    socket.set_nonblocking(true)?;
    // A datagram socket of any protocol: tokio's UdpSocket only calls sendto/recvfrom on it.
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
    socket
        .send_to(&echo.request(v6), SocketAddr::new(addr, 0))
        .await?;
    let mut buf = [0u8; 1500];
    loop {
        let (len, from) = socket.recv_from(&mut buf).await?;
        if from.ip() == addr && echo.is_reply(&buf[..len], v6, raw && !v6, raw) {
            return Ok(true);
        }
    }
}

async fn probe_udp(addr: IpAddr) -> io::Result<bool> {
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| io::Error::other("bad bind address"))?;
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket
        .connect(SocketAddr::new(addr, UDP_PROBE_PORT))
        .await?;
    socket.send(b"tandem-ping-node").await?;
    let mut buf = [0u8; 64];
    match socket.recv(&mut buf).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(true),
        Err(e) => Err(e),
    }
}

/// One probe round over every node (each with its own random probe): reachable if any answered.
pub async fn probe_any(nodes: &[IpAddr], timeout: Duration) -> bool {
    let mut set = tokio::task::JoinSet::new();
    for addr in nodes {
        set.spawn(probe(*addr, timeout));
    }
    while let Some(result) = set.join_next().await {
        if matches!(result, Ok(true)) {
            return true;
        }
    }
    false
}

/// One probe round over every node, each answer (or silence) recorded in `book` as it comes; `on_first_answer`
/// runs as soon as any node answers, so the election hears "reachable" as early as [`probe_any`] would tell it,
/// while the round goes on to hear the other nodes (up to `timeout`). Returns whether any node answered.
pub async fn probe_each(
    nodes: &[IpAddr],
    timeout: Duration,
    book: &Mutex<PingNodes>,
    on_first_answer: impl FnOnce(),
) -> bool {
    let mut set = tokio::task::JoinSet::new();
    for addr in nodes {
        let addr = *addr;
        set.spawn(async move { (addr, probe_rtt(addr, timeout).await) });
    }
    let mut on_first_answer = Some(on_first_answer);
    while let Some(result) = set.join_next().await {
        let Ok((addr, rtt)) = result else { continue };
        book.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(addr, rtt, Instant::now());
        if rtt.is_some()
            && let Some(first) = on_first_answer.take()
        {
            first();
        }
    }
    on_first_answer.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_answers() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(probe(lo, Duration::from_secs(1)).await);
        assert!(probe_any(&[lo], Duration::from_secs(1)).await);
        // The UDP fallback on its own: the closed port answers "unreachable", which proves the host is up.
        assert!(probe_udp(lo).await.unwrap());
    }

    #[tokio::test]
    async fn a_round_records_each_node_with_its_rtt() {
        // Tests send only to loopback, where every address answers: silence is covered by the unit test of
        // `PingNodes` in the parent module.
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let cfg = super::super::PingConfig::default();
        let book = Mutex::new(PingNodes::new(&[a, b], &cfg));
        let mut first_calls = 0;
        let answered =
            probe_each(&[a, b], Duration::from_secs(1), &book, || first_calls += 1).await;
        assert!(answered);
        assert_eq!(first_calls, 1, "reported once, at the first answer");
        for node in book.lock().unwrap().snapshot(Instant::now()) {
            assert!(node.reachable, "{node:?}");
            let rtt = node.rtt.unwrap();
            assert!(
                rtt < Duration::from_millis(100),
                "loopback round trip {rtt:?}"
            );
        }
    }
}
