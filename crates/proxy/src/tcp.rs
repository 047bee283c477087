//! TCP mode: pick a server (persistence, balancing, retry on connect failure), then relay bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::ctx::ConnCtx;
use crate::relay::tasks::relay;
use crate::relay::{Job, RelayEnd, Traffic};
use crate::route::Route;
use crate::state::{Active, AdminState, ServiceRuntime};
use crate::woken::OnlyWhenWoken;

/// `client` is not registered with any reactor yet: blocking when the relay threads run io_uring, non-blocking
/// otherwise (see `listener::Listener::accept`).
pub(crate) async fn serve(
    client: std::net::TcpStream,
    peer: SocketAddr,
    vip_port: u16,
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
) {
    let _svc_active = Active::new(&svc.counters);
    let proxy_cfg = &svc.cfg.proxy;
    let connect_timeout = Duration::from_millis(proxy_cfg.connect_timeout_ms.max(1));
    let mut route = Route::new(&svc, &ctx, peer.ip());
    let (server, upstream) = loop {
        let Some(i) = route.choose(None) else {
            svc.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(service = %svc.cfg.label, client = %peer, "no real server available; closing client connection");
            return;
        };
        let server = &svc.servers[i];
        let target = server.target(vip_port);
        match crate::listener::connect(target, connect_timeout).await {
            Ok(s) => break (server.clone(), s),
            Err(e) => {
                server.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(service = %svc.cfg.label, server = %server.label, %target, error = %e, "connect to real server failed; trying another");
                route.failed(i);
            }
        }
    };
    drop(route);
    let _srv_active = Active::new(&server.counters);
    let kill = server.kill_token();
    // Halted between the choice and now (its close token may already be spent): do not start a new connection.
    if matches!(server.admin_state(), AdminState::Halt { .. }) {
        return;
    }
    let client_idle = Duration::from_millis(proxy_cfg.client_timeout_ms.max(1));
    let server_idle = Duration::from_millis(proxy_cfg.server_timeout_ms.max(1));
    // Halt-with-close and shutdown, polled only when they fire (not on every I/O wake-up of the relay).
    let halted = OnlyWhenWoken::new(async {
        tokio::select! {
            _ = kill.cancelled() => true,
            _ = ctx.shutdown.cancelled() => false,
        }
    });
    let log_end = |end: RelayEnd| match end {
        RelayEnd::Closed => {}
        RelayEnd::Idle => tracing::debug!(service = %svc.cfg.label, client = %peer, "idle timeout"),
        RelayEnd::Error(e) => {
            tracing::debug!(service = %svc.cfg.label, client = %peer, error = %e, "relay ended")
        }
    };
    let log_halt = |by_halt: bool| {
        if by_halt {
            tracing::info!(service = %svc.cfg.label, server = %server.label, client = %peer, "closed by halt");
        }
    };
    if let Some(loops) = &ctx.relay_loops {
        let upstream = match upstream.into_std() {
            Ok(u) => u,
            Err(e) => return log_end(RelayEnd::Error(e)),
        };
        let (done, ended) = tokio::sync::oneshot::channel();
        let id = loops.hand_over(Job {
            client,
            server: upstream,
            traffic: Traffic::new(
                client_idle,
                server_idle,
                svc.counters.clone(),
                server.clone(),
            ),
            done,
        });
        tokio::select! {
            biased;
            end = ended => log_end(end.unwrap_or(RelayEnd::Closed)),
            by_halt = halted => {
                loops.close(id);
                log_halt(by_halt);
            }
        }
        return;
    }
    let client = match TcpStream::from_std(client) {
        Ok(c) => c,
        Err(e) => return log_end(RelayEnd::Error(e)),
    };
    tokio::select! {
        biased;
        end = relay(&client, &upstream, client_idle, server_idle, &svc.counters, &server.counters) => log_end(end),
        by_halt = halted => log_halt(by_halt),
    }
}
