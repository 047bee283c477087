//! The process-death probe: a fresh TCP connection to the peer's sync port, whose refusal (a RST to our own SYN)
//! confirms that the peer's host lives but its daemon is gone (docs/protocol.md, "Process death").

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::election::Input;

/// How long the process-death probe (a TCP connect to the peer's sync port) waits for the peer's kernel. A live
/// host answers a SYN within a round trip; no answer in time means "not confirmed", never "gone".
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(50);

/// True if `target` refused a TCP connection from `local` (RST) within [`PROBE_TIMEOUT`]. Binding to the node's
/// own address keeps the probe on the path the heartbeats take; an unspecified or foreign-family address binds
/// nothing but the port.
async fn probe_refused(local: SocketAddr, target: SocketAddr) -> bool {
    let socket = match target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let Ok(socket) = socket else { return false };
    if local.is_ipv4() == target.is_ipv4() && !local.ip().is_unspecified() {
        let _ = socket.bind(local);
    }
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, socket.connect(target)).await,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

/// Probes `peer`'s sync `port` from `bind` on a task of its own and feeds the answer back as
/// [`Input::PeerProbeResult`] (`refused` only for a RST; an accepted connection is closed at once). Without a peer or
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
