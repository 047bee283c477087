//! TCP mode: pick a server (persistence, balancing, retry on connect failure), then relay bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;

use crate::access_log::{TcpEnd, TcpLine};
use crate::ctx::ConnCtx;
use crate::relay::tasks::relay;
use crate::relay::{Job, RelayEnd, Traffic};
use crate::route::Route;
use crate::state::{Active, AdminState, Counters, ServerRuntime, ServiceRuntime};
use crate::vip_conns::reset_on_close;
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
    let log = ctx
        .access_log_for(&svc.cfg.label)
        .map(|log| (log, SystemTime::now(), Instant::now()));
    let mut served = Served {
        bytes: log.as_ref().map(|_| Arc::default()),
        ..Served::default()
    };
    let end = serve_inner(client, peer, vip_port, &svc, &ctx, &mut served).await;
    if let (Some((log, accepted, started)), Some(bytes)) = (log, served.bytes) {
        let line = TcpLine {
            client: peer,
            accepted,
            frontend: SocketAddr::new(svc.cfg.vip, vip_port),
            service: &svc.cfg.label,
            server: served.server.as_ref().map(|s| s.label.as_str()),
            connect: served.connect,
            total: started.elapsed(),
            bytes_out: bytes.bytes_out.load(Ordering::Relaxed),
            bytes_in: bytes.bytes_in.load(Ordering::Relaxed),
            end,
        }
        .format();
        log.send(line, &svc.metrics);
    }
}

/// What a connection's access-log line needs from serving it.
#[derive(Default)]
struct Served {
    /// The connection's own bytes; `Some` only when it is logged.
    bytes: Option<Arc<Counters>>,
    connect: Option<Duration>,
    /// Set only when logged.
    server: Option<Arc<ServerRuntime>>,
}

async fn serve_inner(
    client: std::net::TcpStream,
    peer: SocketAddr,
    vip_port: u16,
    svc: &Arc<ServiceRuntime>,
    ctx: &ConnCtx,
    served: &mut Served,
) -> TcpEnd {
    let _svc_active = Active::new(&svc.counters);
    let proxy_cfg = &svc.cfg.proxy;
    let connect_timeout = Duration::from_millis(proxy_cfg.connect_timeout_ms.max(1));
    let mut route = Route::new(svc, ctx, peer.ip());
    let (server, upstream) = loop {
        let Some(i) = route.choose(None) else {
            svc.failures.fetch_add(1, Ordering::Relaxed);
            if let Some(held) = svc.metrics.failure_logs.no_server.admit_now() {
                tracing::warn!(service = %svc.cfg.label, client = %peer, held_back = held, "no real server available; closing client connection");
            }
            return TcpEnd::NoServer;
        };
        let server = &svc.servers[i];
        let target = server.target(vip_port);
        let started = Instant::now();
        match crate::listener::connect(target, connect_timeout).await {
            Ok(s) => {
                let took = started.elapsed();
                svc.metrics.connect.observe(took);
                served.connect = Some(took);
                if served.bytes.is_some() {
                    served.server = Some(server.clone());
                }
                break (server.clone(), s);
            }
            Err(e) => {
                server.connect_failures.fetch_add(1, Ordering::Relaxed);
                if let Some(held) = svc.metrics.failure_logs.connect_failed.admit_now() {
                    tracing::warn!(service = %svc.cfg.label, server = %server.label, %target, error = %e, held_back = held, "connect to real server failed; trying another");
                }
                route.failed(i);
            }
        }
    };
    drop(route);
    let _srv_active = Active::new(&server.counters);
    let kill = server.kill_token();
    // Halted between the choice and now (its close token may already be spent): do not start a new connection.
    if matches!(server.admin_state(), AdminState::Halt { .. }) {
        return TcpEnd::Killed;
    }
    let client_idle = Duration::from_millis(proxy_cfg.client_timeout_ms.max(1));
    let server_idle = Duration::from_millis(proxy_cfg.server_timeout_ms.max(1));
    // Halt-with-close, shutdown and the VIP's release, polled only when they fire (not on every I/O wake-up of the
    // relay).
    let halted = OnlyWhenWoken::new(async {
        tokio::select! {
            _ = kill.cancelled() => true,
            _ = ctx.shutdown.cancelled() => false,
        }
    });
    let log_end = |end: RelayEnd| match end {
        RelayEnd::Closed => TcpEnd::Closed,
        RelayEnd::Idle => {
            tracing::debug!(service = %svc.cfg.label, client = %peer, "idle timeout");
            TcpEnd::Idle
        }
        RelayEnd::Error(e) => {
            tracing::debug!(service = %svc.cfg.label, client = %peer, error = %e, "relay ended");
            TcpEnd::Error
        }
    };
    let log_halt = |by_halt: bool| {
        if by_halt {
            tracing::info!(service = %svc.cfg.label, server = %server.label, client = %peer, "closed by halt");
        }
        TcpEnd::Killed
    };
    if let Some(loops) = &ctx.relay_loops {
        let upstream = match upstream.into_std() {
            Ok(u) => u,
            Err(e) => return log_end(RelayEnd::Error(e)),
        };
        let (done, ended) = tokio::sync::oneshot::channel();
        let mut traffic = Traffic::new(
            client_idle,
            server_idle,
            svc.counters.clone(),
            server.clone(),
        );
        traffic.conn = served.bytes.clone();
        let id = loops.hand_over(Job {
            client,
            server: upstream,
            traffic,
            done,
        });
        return tokio::select! {
            biased;
            end = ended => log_end(end.unwrap_or(RelayEnd::Closed)),
            by_halt = halted => {
                // The loop owns both sockets now: it resets the client itself.
                loops.close(id, ctx.released());
                log_halt(by_halt)
            }
        };
    }
    let client = match TcpStream::from_std(client) {
        Ok(c) => c,
        Err(e) => return log_end(RelayEnd::Error(e)),
    };
    tokio::select! {
        biased;
        end = relay(&client, &upstream, client_idle, server_idle, &svc.counters, &server.counters, served.bytes.as_deref()) => log_end(end),
        by_halt = halted => {
            if ctx.released() {
                reset_on_close(&client);
            }
            log_halt(by_halt)
        }
    }
}
