//! The connections of each VIP, so that a node giving up its VIPs closes what it proxied for them at once.
//!
//! A connection belongs to the [`VipScope`] of the VIP its listener was bound to. A scope's token (a child of the
//! proxy's shutdown token) is what every engine already watches for shutdown; [`VipConns::release`] marks the
//! scopes of the given VIPs released and cancels their tokens, so each connection's own task (or relay loop,
//! told by that task) resets the client side and closes the server side: no fd is touched from outside the code
//! that owns it. The released scope leaves the map; the next connection on that VIP starts a new one.
//!
//! Per connection this costs one `Arc` clone, an increment at accept and a decrement at close; the map's lock is
//! taken by an accept loop only when its scope was released, and by `release`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::shared::lock;

/// The connections accepted on one VIP since its last release.
#[derive(Debug)]
pub(crate) struct VipScope {
    /// Cancelled on release of the VIP or on the proxy's shutdown (a child of its token).
    pub(crate) end: CancellationToken,
    released: AtomicBool,
    open: AtomicUsize,
}

impl VipScope {
    /// True once the VIP was released (not merely the proxy shut down): the client side is then reset.
    pub(crate) fn released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}

/// Counts one connection of a scope while it lives (held by the connection's task).
pub(crate) struct OpenConn(Arc<VipScope>);

impl OpenConn {
    pub(crate) fn new(scope: &Arc<VipScope>) -> Self {
        scope.open.fetch_add(1, Ordering::Relaxed);
        OpenConn(scope.clone())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The scopes of every VIP that has had a listener since its last release.
#[derive(Debug)]
pub(crate) struct VipConns {
    /// The proxy's shutdown token: every scope's token is its child.
    shutdown: CancellationToken,
    by_vip: Mutex<HashMap<IpAddr, Arc<VipScope>>>,
    closed_total: AtomicU64,
}

impl VipConns {
    pub(crate) fn new(shutdown: CancellationToken) -> Self {
        VipConns {
            shutdown,
            by_vip: Mutex::new(HashMap::new()),
            closed_total: AtomicU64::new(0),
        }
    }

    /// The scope new connections on `vip` join.
    pub(crate) fn scope(&self, vip: IpAddr) -> Arc<VipScope> {
        lock(&self.by_vip)
            .entry(vip)
            .or_insert_with(|| {
                Arc::new(VipScope {
                    end: self.shutdown.child_token(),
                    released: AtomicBool::new(false),
                    open: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// Tells every connection of `vips` to close now (client reset, server closed); returns how many were open.
    /// Bounded: one map lookup and one cancellation per VIP; the connections close in their own tasks.
    pub(crate) fn release(&self, vips: &[IpAddr]) -> usize {
        let released: Vec<Arc<VipScope>> = {
            let mut by_vip = lock(&self.by_vip);
            vips.iter().filter_map(|vip| by_vip.remove(vip)).collect()
        };
        let mut open = 0;
        for scope in released {
            scope.released.store(true, Ordering::Release);
            open += scope.open.load(Ordering::Relaxed);
            scope.end.cancel();
        }
        self.closed_total.fetch_add(open as u64, Ordering::Relaxed);
        open
    }

    /// Connections closed by releases since start.
    pub(crate) fn closed_total(&self) -> u64 {
        self.closed_total.load(Ordering::Relaxed)
    }
}

/// Makes the next close of `socket` send a RST instead of a FIN (SO_LINGER 0), so that a client whose VIP moved
/// fails at once instead of waiting on a connection nobody serves any more. The caller owns `socket` (it is open).
pub(crate) fn reset_on_close(socket: &impl AsFd) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn release_cancels_only_the_named_vips_and_counts_their_open_connections() {
        let shutdown = CancellationToken::new();
        let conns = VipConns::new(shutdown.clone());
        let a = conns.scope(ip("10.0.0.1"));
        let b = conns.scope(ip("10.0.0.2"));
        let (_a1, _a2, _b1) = (OpenConn::new(&a), OpenConn::new(&a), OpenConn::new(&b));
        {
            let gone = OpenConn::new(&a);
            drop(gone);
        }
        assert_eq!(conns.release(&[ip("10.0.0.1"), ip("10.0.0.9")]), 2);
        assert!(a.end.is_cancelled() && a.released());
        assert!(!b.end.is_cancelled() && !b.released());
        assert_eq!(conns.closed_total(), 2);
        // A released VIP starts a fresh scope for its next connections.
        let a_again = conns.scope(ip("10.0.0.1"));
        assert!(!Arc::ptr_eq(&a, &a_again) && !a_again.end.is_cancelled());
        assert_eq!(conns.release(&[ip("10.0.0.1")]), 0);
        assert_eq!(conns.closed_total(), 2);
    }

    #[test]
    fn shutdown_ends_every_scope_without_marking_it_released() {
        let shutdown = CancellationToken::new();
        let conns = VipConns::new(shutdown.clone());
        let a = conns.scope(ip("10.0.0.1"));
        shutdown.cancel();
        assert!(a.end.is_cancelled());
        assert!(!a.released());
    }
}
