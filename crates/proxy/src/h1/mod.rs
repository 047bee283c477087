//! HTTP mode's native HTTP/1.1 engine (the default behind [`crate::HttpEngine`]).
//!
//! One task per client connection does all the work of a request: it reads the head, picks the server, writes the
//! head upstream (with the first body bytes, in one `writev`), reads the response and relays the bodies as raw bytes
//! (chunked bodies are checked by [`chunked::ChunkedScanner`], not re-encoded). There is no hand-off to another
//! task, no channel and no timer per request: one watchdog per connection holds the deadline of the current phase
//! (header, request body, waiting for the server, response body, idle keep-alive). Reads use the short-read rule of
//! the TCP relay (a read that does not fill the buffer means the socket is drained: no `EAGAIN` read follows), and
//! buffers come from the per-thread pool only while bytes are in flight, so idle keep-alive connections hold none.
//!
//! Behaviour matches the hyper engine ([`crate::HyperEngine`]): keep-alive on both sides with per-server pooling
//! of upstream connections; a connect failure moves the request to another server; a body-less request that fails
//! on a reused upstream connection before any response byte is re-sent once on a fresh one; 503 naming the service
//! (or the fallback server) when no server is up; 504 when the server does not answer within the server timeout;
//! 502 on other upstream failures; `Upgrade` (WebSocket) handshakes become a raw tunnel after the 101. The head
//! rules (what is forwarded, framing, keep-alive) are in [`head`].
//!
//! The client side may be TLS ([`serve_tls_requests`], after the handshake in `crate::tls`): reads decrypt into
//! the same buffers, writes are encrypted into one buffer per write and sent like plain ones (batched), the
//! request head gets `X-Forwarded-Proto: https`, and an upgraded connection is tunnelled through the TLS session.

pub(crate) mod batch;
mod body;
pub(crate) mod chunked;
mod client;
mod conn;
mod forward;
pub(crate) mod head;
mod io;
mod poll_budget;
mod threads;
mod timer;
mod write_mode;

pub use write_mode::WriteBatching;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tandem_config::model::PersistenceMode;
use tokio::net::TcpStream;

use crate::ctx::ConnCtx;
use crate::http::{ConnectionJob, HEADER_READ_TIMEOUT, HttpEngine, wait_first_byte};
use crate::state::{Active, ServiceRuntime};
use crate::vip_conns::reset_on_close;
use crate::woken::OnlyWhenWoken;
use client::Client;
use conn::{Conn, closing_error};
use timer::{Phase, Timer, Watchdog};

/// The native engine.
#[derive(Debug, Default, Clone)]
pub struct H1Engine {
    threads: Option<Arc<threads::H1Threads>>,
}

impl H1Engine {
    /// Serves connections in tasks of the runtime that accepted them; every write is its own system call.
    pub fn in_runtime() -> Self {
        H1Engine { threads: None }
    }

    /// Serves connections on `threads` threads of its own, where the small writes of a round go out in one
    /// `io_uring_enter` (see `h1/batch.rs`) as `batching` says; where io_uring cannot be set up the threads write
    /// with plain system calls, with a warning.
    /// Each thread polls for work up to `poll_limit` before it sleeps, as long as work keeps coming that soon (see
    /// `h1/poll_budget.rs`); zero sleeps at once.
    pub fn on_threads(
        threads: usize,
        batching: WriteBatching,
        poll_limit: Duration,
    ) -> std::io::Result<Self> {
        Ok(H1Engine {
            threads: Some(Arc::new(threads::H1Threads::start(
                threads, batching, poll_limit,
            )?)),
        })
    }

    /// How many of the engine's threads batch their writes through io_uring (0 when it serves in the runtime).
    pub fn rings(&self) -> usize {
        self.threads.as_ref().map_or(0, |t| t.rings)
    }
}

impl HttpEngine for H1Engine {
    fn run(
        &self,
        peer: SocketAddr,
        job: ConnectionJob,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        match &self.threads {
            Some(threads) => threads.serve(peer, job),
            None => Box::pin(async move { job().await }),
        }
    }

    fn serves_tls_http1(&self) -> bool {
        true
    }

    fn serve(
        &self,
        client: std::net::TcpStream,
        peer: SocketAddr,
        vip_port: u16,
        svc: Arc<ServiceRuntime>,
        ctx: ConnCtx,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        match &self.threads {
            Some(threads) => threads.serve(
                peer,
                Box::new(move || Box::pin(register_and_serve(client, peer, vip_port, svc, ctx))),
            ),
            None => Box::pin(register_and_serve(client, peer, vip_port, svc, ctx)),
        }
    }
}

/// Registers `client` with the current runtime's reactor, then serves it.
async fn register_and_serve(
    client: std::net::TcpStream,
    peer: SocketAddr,
    vip_port: u16,
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
) {
    if let Some(client) = crate::http::register(client, peer, &svc) {
        serve_connection(client, peer, vip_port, svc, ctx).await;
    }
}

async fn serve_connection(
    client: TcpStream,
    peer: SocketAddr,
    vip_port: u16,
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
) {
    let _svc_active = Active::new(&svc.counters);
    let client_idle = Duration::from_millis(svc.cfg.proxy.client_timeout_ms.max(1));
    let header_timeout = HEADER_READ_TIMEOUT.min(client_idle);
    // Until the first byte arrives an idle client costs only this small future; the connection state is boxed after.
    if !wait_first_byte(&client, header_timeout, &ctx, &svc, peer).await {
        return;
    }
    let conn = Box::pin(serve_requests(
        Client::Plain(client),
        peer,
        vip_port,
        svc.clone(),
        ctx,
        header_timeout,
    ));
    conn.await;
}

/// Serves the requests of a TLS client whose handshake is done (`session` may hold records it already read).
pub(crate) async fn serve_tls_requests(
    tcp: TcpStream,
    session: rustls::ServerConnection,
    peer: SocketAddr,
    vip_port: u16,
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
) {
    let client = match Client::tls(tcp, session) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(service = %svc.cfg.label, client = %peer, error = %e, "TLS connection failed");
            return;
        }
    };
    let client_idle = Duration::from_millis(svc.cfg.proxy.client_timeout_ms.max(1));
    let header_timeout = HEADER_READ_TIMEOUT.min(client_idle);
    serve_requests(client, peer, vip_port, svc, ctx, header_timeout).await;
}

async fn serve_requests(
    client: Client,
    peer: SocketAddr,
    vip_port: u16,
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
    header_timeout: Duration,
) {
    let timer = Timer::new();
    timer.set(Phase::Header, header_timeout);
    let cookie_name = (svc.cfg.persistence.mode == PersistenceMode::HttpCookie)
        .then(|| svc.cfg.persistence.cookie_name.clone());
    let mut conn = Conn {
        client: &client,
        peer,
        vip_port,
        svc: &svc,
        ctx: &ctx,
        client_ip: peer.ip().to_string(),
        cookie_name,
        buf: None,
        up_head: Vec::with_capacity(512),
        down_head: Vec::with_capacity(512),
        timer: &timer,
        header_timeout,
        client_idle: Duration::from_millis(svc.cfg.proxy.client_timeout_ms.max(1)),
        server_timeout: Duration::from_millis(svc.cfg.proxy.server_timeout_ms.max(1)),
        connect_timeout: Duration::from_millis(svc.cfg.proxy.connect_timeout_ms.max(1)),
        log: ctx.access_log_for(&svc.cfg.label),
        req: None,
        bytes: Default::default(),
        logged_bytes: (0, 0),
    };
    // The deadline of the current phase, shutdown and the VIP's release, polled only when they fire (not on every
    // I/O wake-up).
    let side = OnlyWhenWoken::new(async {
        tokio::select! {
            phase = Watchdog::new(&timer) => Some(phase),
            _ = ctx.shutdown.cancelled() => {
                if ctx.released() {
                    reset_on_close(client.tcp());
                }
                None
            }
        }
    });
    let fired = tokio::select! {
        biased;
        () = conn.run() => None,
        fired = side => fired,
    };
    match fired {
        Some(Phase::WaitingResponse) => {
            if let Some(held) = svc.metrics.failure_logs.server_timeout.admit_now() {
                tracing::warn!(service = %svc.cfg.label, client = %peer, held_back = held, "real server did not answer within the server timeout");
            }
            let page = closing_error(
                504,
                "Gateway Timeout",
                &svc.cfg.label,
                "The real server did not answer in time",
            );
            conn.answered(504);
            if let Some(n) = client.try_write_last(&page) {
                svc.counters.add_out(n);
                if conn.log.is_some() {
                    conn.bytes.add_out(n);
                }
            }
        }
        Some(phase) => {
            tracing::debug!(service = %svc.cfg.label, client = %peer, ?phase, "timeout");
        }
        None => {}
    }
    // A request cut short (timeout, shutdown) is logged too.
    conn.finish_log();
    drop(conn);
}

/// A byte table: ASCII letters and digits, and `extra` (the token and reg-name tables of the parsers).
const fn alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let mut j = 0;
    while j < extra.len() {
        table[extra[j] as usize] = true;
        j += 1;
    }
    table
}
