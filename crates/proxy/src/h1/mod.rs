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

mod batch;
mod chunked;
pub(crate) mod head;
mod threads;

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tandem_config::model::PersistenceMode;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buf, Read};
use crate::ctx::ConnCtx;
use crate::http::{HEADER_READ_TIMEOUT, HttpEngine, error_html, unavailable_page, wait_first_byte};
use crate::pool::h1_conn::UpConn;
use crate::route::Route;
use crate::shared::thread_tag;
use crate::state::{Active, ActiveOwned, ServerRuntime, ServiceRuntime};
use crate::woken::OnlyWhenWoken;
use chunked::{ChunkError, ChunkedScanner};
use head::{Framing, RequestInfo, ResponseInfo};

/// Most time spent reading what a client still sends after we decided to close (so our last response is not cut
/// by a reset), and most bytes read then.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

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

    /// Serves connections on `threads` threads of its own, where the small writes of a batch go out in one
    /// `io_uring_enter` (see `h1/batch.rs`); where io_uring cannot be set up the threads write with plain system
    /// calls, with a warning.
    pub fn on_threads(threads: usize) -> std::io::Result<Self> {
        Ok(H1Engine {
            threads: Some(Arc::new(threads::H1Threads::start(threads)?)),
        })
    }

    /// How many of the engine's threads batch their writes through io_uring (0 when it serves in the runtime).
    pub fn rings(&self) -> usize {
        self.threads.as_ref().map_or(0, |t| t.rings)
    }
}

impl HttpEngine for H1Engine {
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
        client,
        peer,
        vip_port,
        svc.clone(),
        ctx,
        header_timeout,
    ));
    conn.await;
}

async fn serve_requests(
    client: TcpStream,
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
    };
    // The deadline of the current phase and shutdown, polled only when they fire (not on every I/O wake-up).
    let side = OnlyWhenWoken::new(async {
        tokio::select! {
            phase = Watchdog::new(&timer) => Some(phase),
            _ = ctx.shutdown.cancelled() => None,
        }
    });
    let fired = tokio::select! {
        biased;
        () = conn.run() => None,
        fired = side => fired,
    };
    drop(conn);
    match fired {
        Some(Phase::WaitingResponse) => {
            tracing::warn!(service = %svc.cfg.label, client = %peer, "real server did not answer within the server timeout");
            let page = closing_error(
                504,
                "Gateway Timeout",
                &svc.cfg.label,
                "The real server did not answer in time",
            );
            if let Ok(n) = client.try_write(&page) {
                svc.counters.add_out(n);
            }
        }
        Some(phase) => {
            tracing::debug!(service = %svc.cfg.label, client = %peer, ?phase, "timeout");
        }
        None => {}
    }
}

/// An error page after which the connection closes.
fn closing_error(status: u16, reason: &str, service: &str, what: &str) -> Vec<u8> {
    head::local_response(
        status,
        reason,
        &error_html(status, reason, service, what),
        false,
        false,
    )
}

// ------------------------------------------------------------------------------------------------ buffers and I/O

/// Writes `a` then `b`: small writes through this thread's ring when it has one (see [`batch`]), else in one
/// `writev` when the socket takes both.
async fn write_two(to: &TcpStream, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    let total = a.len() + b.len();
    if total > 0
        && total <= batch::MAX_BATCHED
        && let Some(send) = batch::send(std::os::fd::AsRawFd::as_raw_fd(to), a, b)
    {
        // `to` outlives `send`: the borrow of this function keeps the descriptor open.
        let res = send.await;
        // A kernel that does not retry the send itself reports `EAGAIN`: the loop below waits for room instead.
        let sent = if res == -libc::EAGAIN || res == -libc::EINTR {
            0
        } else if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        } else {
            // Short when an error cut the send short (the loop below reports it) or the kernel did not retry.
            usize::try_from(res).unwrap_or(0).min(total)
        };
        if sent == total {
            return Ok(());
        }
        let from_a = sent.min(a.len());
        a = &a[from_a..];
        b = &b[sent - from_a..];
    }
    while !a.is_empty() || !b.is_empty() {
        let r = if a.is_empty() {
            to.try_write(b)
        } else if b.is_empty() {
            to.try_write(a)
        } else {
            to.try_write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let from_a = n.min(a.len());
                a = &a[from_a..];
                b = &b[n - from_a..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until `stream` is readable, unless the server is halted with close (then an error).
async fn readable(stream: &TcpStream, kill: &CancellationToken) -> io::Result<()> {
    tokio::select! {
        biased;
        r = stream.readable() => r,
        _ = kill.cancelled() => Err(io::Error::other("server halted")),
    }
}

// ------------------------------------------------------------------------------------------------ deadlines

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Header = 0,
    /// Between requests.
    Idle = 1,
    /// Relaying the request body.
    RequestBody = 2,
    /// Request sent, no response head yet.
    WaitingResponse = 3,
    /// Relaying the response body.
    ResponseBody = 4,
    /// Upgraded: the tunnel has its own idle timeout.
    Tunnel = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Header,
            1 => Phase::Idle,
            2 => Phase::RequestBody,
            3 => Phase::WaitingResponse,
            4 => Phase::ResponseBody,
            _ => Phase::Tunnel,
        }
    }
}

/// The deadline of the connection's current phase, shared by the request loop (which moves it) and the watchdog.
struct Timer {
    base: Instant,
    deadline_ms: AtomicU64,
    /// The deadline the watchdog's sleep is armed for.
    armed_ms: AtomicU64,
    phase: AtomicU8,
    watchdog: AtomicWaker,
}

impl Timer {
    fn new() -> Self {
        Timer {
            base: Instant::now(),
            deadline_ms: AtomicU64::new(u64::MAX),
            armed_ms: AtomicU64::new(u64::MAX),
            phase: AtomicU8::new(Phase::Header as u8),
            watchdog: AtomicWaker::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Enters `phase`, which must end within `limit` from now.
    fn set(&self, phase: Phase, limit: Duration) {
        let deadline = self.now_ms().saturating_add(limit.as_millis() as u64);
        self.phase.store(phase as u8, Ordering::Relaxed);
        self.deadline_ms.store(deadline, Ordering::Release);
        // A later deadline is noticed when the armed sleep fires; an earlier one needs the watchdog now.
        if deadline < self.armed_ms.load(Ordering::Acquire) {
            self.watchdog.wake();
        }
    }

    /// Enters `phase`, keeping the current deadline.
    fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Enters a phase without a deadline of ours.
    fn clear(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
        self.deadline_ms.store(u64::MAX, Ordering::Release);
    }
}

/// Resolves with the phase whose deadline passed.
struct Watchdog<'a> {
    timer: &'a Timer,
    sleep: Pin<Box<Sleep>>,
    armed: u64,
}

impl<'a> Watchdog<'a> {
    fn new(timer: &'a Timer) -> Self {
        Watchdog {
            timer,
            sleep: Box::pin(tokio::time::sleep_until(
                timer.base + Duration::from_secs(86_400 * 365),
            )),
            armed: u64::MAX,
        }
    }
}

impl Future for Watchdog<'_> {
    type Output = Phase;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Phase> {
        let this = self.get_mut();
        this.timer.watchdog.register(cx.waker());
        loop {
            let deadline = this.timer.deadline_ms.load(Ordering::Acquire);
            if deadline != this.armed {
                this.armed = deadline;
                this.timer.armed_ms.store(deadline, Ordering::Release);
                let ms = deadline.min(86_400_000 * 365);
                this.sleep
                    .as_mut()
                    .reset(this.timer.base + Duration::from_millis(ms));
            }
            match this.sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let deadline = this.timer.deadline_ms.load(Ordering::Acquire);
                    if deadline != u64::MAX && this.timer.now_ms() >= deadline {
                        return Poll::Ready(Phase::from_u8(
                            this.timer.phase.load(Ordering::Relaxed),
                        ));
                    }
                    // Moved later meanwhile: sleep again.
                    this.armed = 0;
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------ bodies

/// Where a body being relayed stands.
#[derive(Clone)]
struct Body {
    framing: Framing,
    remaining: u64,
    chunks: ChunkedScanner,
    done: bool,
}

impl Body {
    fn new(framing: Framing) -> Self {
        Body {
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunks: ChunkedScanner::new(),
            done: framing == Framing::Empty,
        }
    }

    /// How many of `data` (the next bytes of the stream) belong to the body.
    fn take(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        if self.done {
            return Ok(0);
        }
        match self.framing {
            Framing::Empty => Ok(0),
            Framing::Length(_) => {
                let n = (data.len() as u64).min(self.remaining);
                self.remaining -= n;
                self.done = self.remaining == 0;
                Ok(n as usize)
            }
            Framing::Chunked => {
                let n = self.chunks.scan(data)?;
                self.done = self.chunks.is_done();
                Ok(n)
            }
            Framing::UntilClose => Ok(data.len()),
        }
    }
}

/// How a request exchange ended.
enum Outcome {
    /// Finished; keep the client connection for another request or not.
    Done { keep: bool },
    /// The reused upstream connection failed before any response byte; the request can be re-sent on a fresh one.
    RetryFresh,
    /// The server could not be reached; nothing was sent.
    Unreachable,
}

// ------------------------------------------------------------------------------------------------ the connection

struct Conn<'a> {
    client: &'a TcpStream,
    peer: SocketAddr,
    vip_port: u16,
    svc: &'a Arc<ServiceRuntime>,
    ctx: &'a ConnCtx,
    client_ip: String,
    cookie_name: Option<String>,
    /// Bytes read from the client and not yet used.
    buf: Option<Buf>,
    /// The head to send upstream / to the client.
    up_head: Vec<u8>,
    down_head: Vec<u8>,
    timer: &'a Timer,
    header_timeout: Duration,
    client_idle: Duration,
    server_timeout: Duration,
    connect_timeout: Duration,
}

impl Conn<'_> {
    async fn run(&mut self) {
        loop {
            let Some(info) = self.read_request_head().await else {
                return;
            };
            let keep = self.exchange(&info).await;
            if !keep {
                self.linger_close().await;
                return;
            }
            self.timer.set(Phase::Idle, self.client_idle);
        }
    }

    /// Reads until a complete request head is buffered. `None`: the connection is to be closed (EOF, error, or a
    /// bad head, which was answered).
    async fn read_request_head(&mut self) -> Option<RequestInfo> {
        let mut partial = false;
        loop {
            if let Some(buf) = &self.buf
                && !buf.is_empty()
            {
                match head::parse_request(
                    buf.filled(),
                    self.cookie_name.as_deref(),
                    &self.client_ip,
                    &mut self.up_head,
                ) {
                    Ok(Some(info)) => return Some(info),
                    Ok(None) if buf.is_full() => {
                        self.reject(431, "Request Header Fields Too Large").await;
                        return None;
                    }
                    Ok(None) => {
                        if !partial {
                            partial = true;
                            self.timer.set(Phase::Header, self.header_timeout);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(service = %self.svc.cfg.label, client = %self.peer, error = %e, "bad request");
                        self.reject(e.status(), e.reason()).await;
                        return None;
                    }
                }
            } else if let Some(b) = self.buf.take() {
                // Nothing pending between requests: an idle keep-alive connection holds no buffer.
                b.give();
            }
            self.client.readable().await.ok()?;
            let buf = self.buf.get_or_insert_with(Buf::take);
            match buf.fill(self.client) {
                Ok(Read::Data(n)) => self.svc.counters.add_in(n),
                Ok(Read::Empty) => {}
                Ok(Read::Eof) | Err(_) => return None,
            }
        }
    }

    /// Answers a bad request and closes.
    async fn reject(&mut self, status: u16, reason: &str) {
        let page = closing_error(
            status,
            reason,
            &self.svc.cfg.label,
            "The request could not be understood",
        );
        let _ = self.write_client(&page, &[]).await;
        self.linger_close().await;
    }

    async fn write_client(&self, a: &[u8], b: &[u8]) -> io::Result<()> {
        write_two(self.client, a, b).await?;
        self.svc.counters.add_out(a.len() + b.len());
        Ok(())
    }

    /// Sends a local response; keeps the connection only if the request was entirely read.
    async fn local(
        &mut self,
        status: u16,
        reason: &str,
        html: &str,
        info: &RequestInfo,
        body: &Body,
    ) -> bool {
        let keep = info.keep_alive && body.done;
        let page = head::local_response(status, reason, html, keep, info.is_head);
        self.write_client(&page, &[]).await.is_ok() && keep
    }

    /// Closes the way HTTP servers do: send FIN, then read (and drop) what the client still sends for a moment, so
    /// that closing with unread data does not reset the connection and destroy the response just sent.
    async fn linger_close(&mut self) {
        if let Some(b) = self.buf.take() {
            b.give();
        }
        let _ = socket2::SockRef::from(self.client).shutdown(std::net::Shutdown::Write);
        self.timer.clear(Phase::Idle);
        let mut scratch = [0u8; 4096];
        let mut read = 0;
        let _ = tokio::time::timeout(LINGER, async {
            while read < LINGER_BYTES {
                if self.client.readable().await.is_err() {
                    return;
                }
                match self.client.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }

    /// Serves one request (head parsed, in `self.up_head`); returns whether the client connection stays open.
    async fn exchange(&mut self, info: &RequestInfo) -> bool {
        if let Some(buf) = &mut self.buf {
            buf.consume(info.head_len);
        }
        let svc = self.svc;
        let mut body = Body::new(info.framing);
        let mut route = Route::new(svc, self.ctx, self.peer.ip());
        loop {
            let choice = route.choose(info.cookie.as_deref());
            let (server, index) = match choice {
                Some(i) => (svc.servers[i].clone(), Some(i)),
                None => match &svc.fallback_runtime {
                    Some(f) => (f.clone(), None),
                    None => {
                        svc.failures.fetch_add(1, Ordering::Relaxed);
                        let page = unavailable_page(&svc.cfg.label);
                        return self
                            .local(503, "Service Unavailable", &page, info, &body)
                            .await;
                    }
                },
            };
            let set_cookie = match index {
                Some(i)
                    if self.cookie_name.is_some()
                        && info.cookie.as_deref() != Some(server.label.as_str()) =>
                {
                    svc.cookie_value(i)
                }
                _ => None,
            };
            let active = ActiveOwned::new(server.clone());
            let mut fresh_only = false;
            // Ok(keep), or Err(()) when the server could not be reached (nothing was sent).
            let outcome: Result<bool, ()> = loop {
                let pooled = if fresh_only {
                    None
                } else {
                    server.h1_pool.take()
                };
                let reused = pooled.is_some();
                let up = match pooled {
                    Some(c) => c,
                    None => {
                        let target = server.target(self.vip_port);
                        match crate::listener::connect(target, self.connect_timeout).await {
                            Ok(stream) => UpConn {
                                stream,
                                buf: None,
                                home: thread_tag(),
                            },
                            Err(e) => {
                                server.connect_failures.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(service = %svc.cfg.label, server = %server.label, %target, error = %e, "connect to real server failed");
                                break Err(());
                            }
                        }
                    }
                };
                match self
                    .forward(
                        up,
                        info,
                        &mut body,
                        &server,
                        reused,
                        set_cookie.as_ref().map(|v| v.as_bytes()),
                    )
                    .await
                {
                    Outcome::RetryFresh => fresh_only = true,
                    Outcome::Unreachable => break Err(()),
                    Outcome::Done { keep } => break Ok(keep),
                }
            };
            drop(active);
            match outcome {
                Ok(keep) => return keep,
                Err(()) => match index {
                    Some(i) => route.failed(i),
                    None => {
                        svc.failures.fetch_add(1, Ordering::Relaxed);
                        let page = unavailable_page(&svc.cfg.label);
                        return self
                            .local(503, "Service Unavailable", &page, info, &body)
                            .await;
                    }
                },
            }
        }
    }

    /// One attempt of a request on one upstream connection.
    async fn forward(
        &mut self,
        mut up: UpConn,
        info: &RequestInfo,
        body: &mut Body,
        server: &Arc<ServerRuntime>,
        reused: bool,
        set_cookie: Option<&[u8]>,
    ) -> Outcome {
        let svc = self.svc;
        let kill = server.kill_token();
        let replayable = info.framing == Framing::Empty;
        // The head and the body bytes already here, in one write.
        // Nothing of the client's is consumed until the first write succeeds: until then the request can go to
        // another connection as it is.
        let unsent = body.clone();
        let first = match &self.buf {
            Some(buf) => match body.take(buf.filled()) {
                Ok(n) => n,
                Err(e) => return self.bad_body(e).await,
            },
            None => 0,
        };
        let empty: &[u8] = &[];
        let first_bytes = self.buf.as_ref().map_or(empty, |b| &b.filled()[..first]);
        if let Err(e) = write_two(&up.stream, &self.up_head, first_bytes).await {
            tracing::debug!(service = %svc.cfg.label, server = %server.label, error = %e, reused, "upstream write failed");
            *body = unsent;
            return if reused {
                Outcome::RetryFresh
            } else {
                Outcome::Unreachable
            };
        }
        server.counters.add_in(self.up_head.len() + first);
        if let Some(buf) = &mut self.buf {
            buf.consume(first);
        }

        // Request body and response head; interim responses are passed on as they come.
        let mut got_bytes = false;
        let response = loop {
            if !body.done {
                match self.relay_request_body(&up, body, server, &kill).await {
                    Ok(()) => {}
                    Err(BodyFailure::Client) => return Outcome::Done { keep: false },
                    Err(BodyFailure::Upstream) => return self.gateway_error(info, body).await,
                    Err(BodyFailure::Malformed(e)) => return self.bad_body(e).await,
                }
            }
            self.timer.set(Phase::WaitingResponse, self.server_timeout);
            match self
                .read_response_head(&mut up, info, set_cookie, server, &kill, &mut got_bytes)
                .await
            {
                Ok(r) if r.is_interim() => {
                    // HTTP/1.0 clients do not know 1xx responses: those are dropped.
                    if !info.http10 && self.write_client(&self.down_head, &[]).await.is_err() {
                        return Outcome::Done { keep: false };
                    }
                    if let Some(b) = &mut up.buf {
                        b.consume(r.head_len);
                    }
                }
                Ok(r) => break r,
                Err(e) => {
                    tracing::debug!(service = %svc.cfg.label, server = %server.label, error = %e, reused, "upstream response failed");
                    if reused && replayable && !got_bytes {
                        return Outcome::RetryFresh;
                    }
                    return self.gateway_error(info, body).await;
                }
            }
        };
        let Some(mut up_buf) = up.buf.take() else {
            return self.gateway_error(info, body).await;
        };
        up_buf.consume(response.head_len);
        let mut down = Body::new(response.framing);
        let first = match down.take(up_buf.filled()) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(service = %svc.cfg.label, server = %server.label, error = %e, "bad response body");
                up_buf.give();
                return self.gateway_error(info, body).await;
            }
        };
        // From here on a timeout must not answer 504: the response has begun.
        self.timer.enter(Phase::ResponseBody);
        if self
            .write_client(&self.down_head, &up_buf.filled()[..first])
            .await
            .is_err()
        {
            up_buf.give();
            return Outcome::Done { keep: false };
        }
        up_buf.consume(first);

        if response.tunnel {
            return self.tunnel(up, up_buf, server, &kill).await;
        }
        if !down.done {
            self.timer.set(Phase::ResponseBody, self.server_timeout);
            match self
                .relay_response_body(&up.stream, &mut up_buf, &mut down, server, &kill)
                .await
            {
                Ok(()) => {}
                Err(e) => {
                    tracing::debug!(service = %svc.cfg.label, server = %server.label, error = %e, "response body relay ended");
                    up_buf.give();
                    return Outcome::Done { keep: false };
                }
            }
        }
        let clean = body.done && up_buf.is_empty();
        up.buf = Some(up_buf);
        if clean && response.server_reusable {
            server.h1_pool.put(up);
        }
        Outcome::Done {
            keep: response.client_keep_alive && body.done,
        }
    }

    async fn bad_body(&mut self, e: ChunkError) -> Outcome {
        tracing::debug!(service = %self.svc.cfg.label, client = %self.peer, error = %e, "bad request body");
        let page = closing_error(
            400,
            "Bad Request",
            &self.svc.cfg.label,
            "The request body is malformed",
        );
        let _ = self.write_client(&page, &[]).await;
        Outcome::Done { keep: false }
    }

    async fn gateway_error(&mut self, info: &RequestInfo, body: &Body) -> Outcome {
        let html = error_html(
            502,
            "Bad Gateway",
            &self.svc.cfg.label,
            "The real server failed to answer",
        );
        let keep = self.local(502, "Bad Gateway", &html, info, body).await;
        Outcome::Done { keep }
    }

    /// Relays the request body until it is complete, or until the server starts answering (early response, or
    /// `100 Continue`).
    async fn relay_request_body(
        &mut self,
        up: &UpConn,
        body: &mut Body,
        server: &ServerRuntime,
        kill: &CancellationToken,
    ) -> Result<(), BodyFailure> {
        self.timer.set(Phase::RequestBody, self.client_idle);
        while !body.done {
            let client_ready = tokio::select! {
                biased;
                r = up.stream.readable() => { r.map_err(|_| BodyFailure::Upstream)?; false }
                r = self.client.readable() => { r.map_err(|_| BodyFailure::Client)?; true }
                _ = kill.cancelled() => return Err(BodyFailure::Upstream),
            };
            if !client_ready {
                return Ok(());
            }
            let buf = self.buf.get_or_insert_with(Buf::take);
            match buf.fill(self.client) {
                Ok(Read::Data(n)) => self.svc.counters.add_in(n),
                Ok(Read::Empty) => continue,
                Ok(Read::Eof) | Err(_) => return Err(BodyFailure::Client),
            }
            self.timer.set(Phase::RequestBody, self.client_idle);
            let n = body.take(buf.filled()).map_err(BodyFailure::Malformed)?;
            write_two(&up.stream, &buf.filled()[..n], &[])
                .await
                .map_err(|_| BodyFailure::Upstream)?;
            server.counters.add_in(n);
            buf.consume(n);
        }
        Ok(())
    }

    /// Reads a response head (into `up.buf`) and writes the client's version of it to `self.down_head`.
    async fn read_response_head(
        &mut self,
        up: &mut UpConn,
        info: &RequestInfo,
        set_cookie: Option<&[u8]>,
        server: &ServerRuntime,
        kill: &CancellationToken,
        got_bytes: &mut bool,
    ) -> io::Result<ResponseInfo> {
        loop {
            if let Some(buf) = &up.buf
                && !buf.is_empty()
            {
                match head::parse_response(buf.filled(), info, set_cookie, &mut self.down_head) {
                    Ok(Some(r)) => return Ok(r),
                    Ok(None) if buf.is_full() => {
                        return Err(io::Error::other("response head too large"));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            readable(&up.stream, kill).await?;
            let buf = up.buf.get_or_insert_with(Buf::take);
            match buf.fill(&up.stream)? {
                Read::Data(n) => {
                    *got_bytes = true;
                    server.counters.add_out(n);
                }
                Read::Empty => {}
                Read::Eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed before answering",
                    ));
                }
            }
        }
    }

    /// Relays the rest of a response body from the server to the client.
    async fn relay_response_body(
        &mut self,
        from: &TcpStream,
        buf: &mut Buf,
        body: &mut Body,
        server: &ServerRuntime,
        kill: &CancellationToken,
    ) -> io::Result<()> {
        while !body.done {
            readable(from, kill).await?;
            match buf.fill(from)? {
                Read::Data(n) => server.counters.add_out(n),
                Read::Empty => continue,
                Read::Eof if body.framing == Framing::UntilClose => {
                    body.done = true;
                    return Ok(());
                }
                Read::Eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed inside the body",
                    ));
                }
            }
            self.timer.set(Phase::ResponseBody, self.server_timeout);
            let n = body.take(buf.filled()).map_err(io::Error::other)?;
            self.write_client(&buf.filled()[..n], &[]).await?;
            buf.consume(n);
        }
        Ok(())
    }

    /// After a 101: both connections become one raw tunnel until either side ends it.
    async fn tunnel(
        &mut self,
        up: UpConn,
        up_buf: Buf,
        server: &ServerRuntime,
        kill: &CancellationToken,
    ) -> Outcome {
        self.timer.clear(Phase::Tunnel);
        let svc = self.svc;
        // What each side sent after the handshake and we already read.
        if let Some(buf) = self.buf.take() {
            let ok = write_two(&up.stream, buf.filled(), &[]).await.is_ok();
            server.counters.add_in(buf.filled().len());
            buf.give();
            if !ok {
                up_buf.give();
                return Outcome::Done { keep: false };
            }
        }
        let ok = self.write_client(up_buf.filled(), &[]).await.is_ok();
        up_buf.give();
        if !ok {
            return Outcome::Done { keep: false };
        }
        tokio::select! {
            end = crate::relay::tasks::relay(self.client, &up.stream, self.client_idle, self.server_timeout, &svc.counters, &server.counters) => {
                tracing::debug!(service = %svc.cfg.label, client = %self.peer, end = ?end, "upgraded connection ended");
            }
            _ = kill.cancelled() => {}
        }
        Outcome::Done { keep: false }
    }
}

#[derive(Debug)]
enum BodyFailure {
    Client,
    Upstream,
    Malformed(ChunkError),
}
