//! The probes themselves (tokio sockets, socket2 for the ICMP ones): built with the `driver` feature only.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::EchoProbe;

/// Traceroute's first port: nothing listens there, so a live host answers "port unreachable".
const UDP_PROBE_PORT: u16 = 33434;

/// Probes one address with a fresh random [`EchoProbe`]; `true` if it answered within `timeout`.
pub async fn probe(addr: IpAddr, timeout: Duration) -> bool {
    let Some(echo) = EchoProbe::random() else {
        return false;
    };
    match tokio::time::timeout(timeout, probe_icmp(addr, echo)).await {
        Ok(Ok(answered)) => return answered,
        Ok(Err(_)) => {}        // no ICMP socket available: fall back to UDP
        Err(_) => return false, // no reply in time
    }
    matches!(
        tokio::time::timeout(timeout, probe_udp(addr)).await,
        Ok(Ok(true))
    )
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
}
