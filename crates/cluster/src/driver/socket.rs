//! The heartbeat socket in its two modes. Normally it is registered with tokio's reactor and read the moment a
//! datagram arrives. While datagrams are being rejected (a flood), it is taken out of the reactor and read by the
//! driver's timer every [`FLOOD_READ_EVERY`](super::FLOOD_READ_EVERY): every arrival on a registered socket wakes
//! the reactor's `epoll_wait`, whether the task polls the socket or not, and those wake-ups, not the checks, were
//! the cost of a flood. A genuine heartbeat waits at most one period while the flood lasts.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use tandem_types::exit_order::dup_release_first;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::batch::RecvBatch;

/// Readiness the heartbeat socket waits for: data, or a pending error (each cleared by a read that finds nothing,
/// so a reported error does not wake the task again).
const READ_OR_ERROR: Interest = Interest::READABLE.add(Interest::ERROR);

pub(super) enum HbSocket {
    /// In the reactor: `readable()` wakes the task.
    Registered(UdpSocket),
    /// Out of the reactor (same socket, non-blocking): read when the timer says.
    Polled(std::net::UdpSocket),
    /// Only for the instant of a switch between the two.
    Switching,
}

impl HbSocket {
    fn fd(&self) -> RawFd {
        match self {
            HbSocket::Registered(s) => s.as_raw_fd(),
            HbSocket::Polled(s) => s.as_raw_fd(),
            HbSocket::Switching => -1,
        }
    }

    /// Takes the socket out of the reactor (no-op if it is out).
    pub(super) fn unregister(&mut self) {
        *self = std::mem::replace(self, HbSocket::Switching).into_polled();
    }

    /// Puts the socket back into the reactor (no-op if it is in).
    pub(super) fn register(&mut self) {
        *self = std::mem::replace(self, HbSocket::Switching).into_registered();
    }

    /// Ready to read, or an error is pending (registered); never, when polled (the timer reads instead). A pending
    /// error is the peer's "port unreachable", which raises only `EPOLLERR`: waiting for it too lets the next read
    /// report it at once rather than at the next send, an interval later.
    pub(super) async fn readable(&self) -> io::Result<()> {
        match self {
            HbSocket::Registered(s) => s.ready(READ_OR_ERROR).await.map(|_| ()),
            HbSocket::Polled(_) | HbSocket::Switching => std::future::pending().await,
        }
    }

    /// One `recvmmsg` without blocking (`WouldBlock` when empty; a registered socket's readiness is cleared then).
    pub(super) fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let fd = self.fd();
        match self {
            // One interest per `try_io`: tokio matches a combined interest against no readiness at all (the read
            // would never run, nor clear the error readiness that woke the task). The error's turn reads too: the
            // pending error is what `recvmmsg` reports, and a read that finds nothing clears that readiness.
            HbSocket::Registered(s) => match s.try_io(Interest::READABLE, || batch.recv(fd)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.try_io(Interest::ERROR, || batch.recv(fd))
                }
                other => other,
            },
            HbSocket::Polled(_) => batch.recv(fd),
            HbSocket::Switching => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Sends one datagram to the connected peer, or to `to` when `connected` is false.
    pub(super) async fn send(
        &self,
        datagram: &[u8],
        to: SocketAddr,
        connected: bool,
    ) -> io::Result<usize> {
        match (self, connected) {
            (HbSocket::Registered(s), true) => s.send(datagram).await,
            (HbSocket::Registered(s), false) => s.send_to(datagram, to).await,
            // Non-blocking; a UDP send only fails to queue when the send buffer is full: counted as a send error.
            (HbSocket::Polled(s), true) => s.send(datagram),
            (HbSocket::Polled(s), false) => s.send_to(datagram, to),
            (HbSocket::Switching, _) => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Takes the socket out of the reactor. A duplicate descriptor (in the release-first range, as the socket was:
    /// `tandem_types::exit_order`) keeps it open while tokio's deregisters and
    /// closes its own, so a failure cannot lose the socket (at worst it stays registered).
    fn into_polled(self) -> Self {
        match self {
            HbSocket::Registered(s) => match dup_release_first(s.as_fd()) {
                Ok(dup) => {
                    drop(s);
                    HbSocket::Polled(std::net::UdpSocket::from(dup))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat socket stays in the reactor");
                    HbSocket::Registered(s)
                }
            },
            polled => polled,
        }
    }

    /// Puts the socket back into the reactor (a duplicate is registered; on failure the socket stays polled).
    fn into_registered(self) -> Self {
        match self {
            HbSocket::Polled(s) => {
                let registered = dup_release_first(s.as_fd())
                    .map(std::net::UdpSocket::from)
                    .and_then(UdpSocket::from_std);
                match registered {
                    Ok(r) => HbSocket::Registered(r),
                    Err(e) => {
                        tracing::debug!(error = %e, "heartbeat socket stays polled");
                        HbSocket::Polled(s)
                    }
                }
            }
            registered => registered,
        }
    }
}
