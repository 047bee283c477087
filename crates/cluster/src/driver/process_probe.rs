//! The process-death probe: a fresh TCP connection to the peer's sync port, whose refusal (a RST to our own SYN)
//! confirms that the peer's host lives but its daemon is gone (docs/protocol.md, "Process death").

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::election::Input;

/// How long the process-death probe (a TCP connect to the peer's sync port) waits for the peer's kernel. A live
/// host answers a SYN within a round trip; no answer in time means "not confirmed", never "gone".
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(50);

/// True if `target` refused a TCP connection from `local` within [`PROBE_TIMEOUT`]: a RST to our SYN, or a RST on the
/// connection just accepted. The second is a daemon being torn down: its kernel still completes the handshake for a
/// listening socket not closed yet (a process's sockets close one after the other as it exits) and resets the
/// queued connection when it is. A live daemon accepts and closes the probe (FIN: the dialer's presence listener) or
/// keeps it open waiting for a handshake (the acceptor): "not refused". Nothing is sent. Binding to the node's own
/// address keeps the probe on the path the heartbeats take; an unspecified or foreign-family address binds nothing
/// but the port.
async fn probe_refused(local: SocketAddr, target: SocketAddr) -> bool {
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let Ok(socket) = socket else { return false };
    if local.is_ipv4() == target.is_ipv4() && !local.ip().is_unspecified() {
        let _ = socket.bind(local);
    }
    let answer = async {
        let mut stream = match socket.connect(target).await {
            Ok(stream) => stream,
            Err(e) => return e.kind() == io::ErrorKind::ConnectionRefused,
        };
        let mut byte = [0u8; 1];
        matches!(
            stream.read(&mut byte).await,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset
        )
    };
    tokio::time::timeout(PROBE_TIMEOUT, answer)
        .await
        .unwrap_or(false)
}

/// Probes `peer`'s sync `port` from `bind` on a task of its own and feeds the answer back as
/// [`Input::PeerProbeResult`] (`refused` only for a RST; an accepted connection is closed once answered). Without a peer or
/// a port there is nothing to probe: "not refused" at once, so the election's suspicion does not linger.
pub(super) fn spawn(
    peer: Option<SocketAddr>,
    port: Option<u16>,
    bind: IpAddr,
    results: &mpsc::UnboundedSender<Input>,
) {
    let (Some(peer), Some(port)) = (peer, port) else {
        let _ = results.send(Input::PeerProbeResult { refused: false });
        return;
    };
    let target = SocketAddr::new(peer.ip(), port);
    let local = SocketAddr::new(bind, 0);
    let results = results.clone();
    tokio::spawn(async move {
        let refused = probe_refused(local, target).await;
        tracing::debug!(%target, refused, "peer process probe");
        let _ = results.send(Input::PeerProbeResult { refused });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:0";

    fn listener() -> (std::net::TcpListener, SocketAddr) {
        let l = std::net::TcpListener::bind(LOCAL).unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let (l, addr) = listener();
        drop(l);
        assert!(probe_refused(LOCAL.parse().unwrap(), addr).await);
    }

    #[tokio::test]
    async fn a_listener_that_holds_or_closes_the_probe_is_alive() {
        // The acceptor: keeps the connection for its handshake (the probe times out).
        let (held, addr) = listener();
        assert!(!probe_refused(LOCAL.parse().unwrap(), addr).await);
        drop(held);
        // The dialer's presence listener: accepts and closes (FIN).
        let (l, addr) = listener();
        let closer = std::thread::spawn(move || {
            let (stream, _) = l.accept().unwrap();
            drop(stream);
        });
        assert!(!probe_refused(LOCAL.parse().unwrap(), addr).await);
        closer.join().unwrap();
    }

    #[tokio::test]
    async fn a_listener_closed_with_the_probe_queued_is_refused() {
        // A daemon being torn down: the handshake completed in its listener's queue, then the listener closed.
        let (l, addr) = listener();
        let probe = tokio::spawn(probe_refused(LOCAL.parse().unwrap(), addr));
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(l);
        assert!(probe.await.unwrap());
    }
}
