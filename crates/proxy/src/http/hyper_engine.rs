//! HTTP mode on hyper 1.x, behind the [`HttpEngine`] seam.
//!
//! HTTP/1.1 with keep-alive towards clients and servers; idle upstream connections are pooled per real server and
//! reused. The proxy is transparent except for `X-Forwarded-For` (the client address is appended) and, with
//! http-cookie persistence, the inserted cookie: no `Via`, hop-by-hop headers (`Connection` and the headers it
//! names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are dropped on both
//! legs, except that an `Upgrade` (WebSocket) handshake is passed through and then relayed as raw bytes.
//!
//! Server choice is per request (persistence, then balancing); a connect failure moves the request to another
//! server. A body-less request that fails on a reused (possibly stale) upstream connection is retried once on a
//! fresh one. With no server up, the service's (or the cluster's) fallback server answers, else a 503 page naming
//! the service. A server that does not answer within the server timeout gives 504; other upstream errors give 502.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tandem_config::model::PersistenceMode;
use tokio::net::TcpStream;

pub(crate) use super::io::Activity;
use super::io::{ClientSink, CountingIo, ServerSink};
use super::{
    HEADER_READ_TIMEOUT, HttpEngine, cookie_in, error_html, register, unavailable_page,
    wait_first_byte,
};
use crate::ctx::ConnCtx;
use crate::pool::hyper_conn::{UpBody, Upstream};
use crate::route::Route;
use crate::state::{Active, ActiveOwned, ServerRuntime, ServiceRuntime};
use crate::vip_conns::reset_on_close;
use crate::woken::OnlyWhenWoken;

/// The hyper-based engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct HyperEngine;

impl HttpEngine for HyperEngine {
    fn serve(
        &self,
        client: std::net::TcpStream,
        peer: SocketAddr,
        vip_port: u16,
        svc: Arc<ServiceRuntime>,
        ctx: ConnCtx,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            if let Some(client) = register(client, peer, &svc) {
                serve_connection(client, peer, vip_port, svc, ctx).await;
            }
        })
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
    // Until the first byte arrives, an idle client costs only this small future: hyper's buffers and connection
    // state are allocated (boxed) afterwards.
    if !wait_first_byte(
        &client,
        HEADER_READ_TIMEOUT.min(client_idle),
        &ctx,
        &svc,
        peer,
    )
    .await
    {
        return;
    }
    // A separate statement: a temporary in the awaited expression would keep its slot in this future.
    let http = Box::pin(serve_http(
        client,
        peer,
        vip_port,
        svc.clone(),
        ctx,
        client_idle,
    ));
    http.await;
}

async fn serve_http(
    client: TcpStream,
    peer: SocketAddr,
    vip_port: u16,
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
    client_idle: Duration,
) {
    let activity = Arc::new(Activity::new());
    let client_fd = client.as_raw_fd();
    let io = CountingIo::new(
        client,
        ClientSink {
            counters: svc.counters.clone(),
            activity: activity.clone(),
        },
    );
    let conn = Conn {
        peer,
        vip_port,
        svc,
        ctx,
        client_idle,
        activity,
        client_fd,
    };
    serve_io(io, conn, Protocol::Http1).await;
}

/// What a client connection is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Plain HTTP/1.x.
    Http1,
    /// HTTP/1.x over TLS.
    Https1,
    /// HTTP/2 over TLS.
    H2,
}

/// One client connection as the hyper side serves it.
pub(crate) struct Conn {
    pub(crate) peer: SocketAddr,
    pub(crate) vip_port: u16,
    pub(crate) svc: Arc<ServiceRuntime>,
    pub(crate) ctx: ConnCtx,
    pub(crate) client_idle: Duration,
    /// Stamped by the counting I/O under `io` (under TLS, if any).
    pub(crate) activity: Arc<Activity>,
    /// The client socket's descriptor, for the reset of a released VIP's connection.
    pub(crate) client_fd: std::os::fd::RawFd,
}

/// Serves the requests of one client connection (plain, or the decrypted side of TLS) until it ends, the client
/// idles out, the proxy shuts down or the VIP is released.
pub(crate) async fn serve_io<I>(io: I, conn: Conn, protocol: Protocol)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        vip_port,
        svc,
        ctx,
        client_idle,
        activity,
        client_fd,
    } = conn;
    let io = TokioIo::new(io);
    let req_ctx = Arc::new(RequestCtx {
        svc: svc.clone(),
        ctx: ctx.clone(),
        peer,
        vip_port,
        activity: activity.clone(),
        client_ip: HeaderValue::from_str(&peer.ip().to_string()).ok(),
        https: protocol != Protocol::Http1,
    });
    let service = hyper::service::service_fn(move |req| {
        let rc = req_ctx.clone();
        async move { Ok::<_, Infallible>(handle(rc, req).await) }
    });
    let conn: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>> = match protocol {
        Protocol::Http1 | Protocol::Https1 => Box::pin(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT.min(client_idle))
                .keep_alive(true)
                .serve_connection(io, service)
                .with_upgrades(),
        ),
        Protocol::H2 => Box::pin(
            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(H2_MAX_STREAMS)
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .max_header_list_size(H2_MAX_HEADER_LIST)
                .max_send_buf_size(H2_STREAM_WINDOW as usize)
                .serve_connection(io, service),
        ),
    };
    // Idle timeout, shutdown and the VIP's release, polled only when they fire (not on every I/O wake-up of the
    // connection).
    let stop = OnlyWhenWoken::new(async {
        tokio::select! {
            _ = idle_watchdog(&activity, client_idle) => true,
            _ = ctx.shutdown.cancelled() => {
                if ctx.released() {
                    // SAFETY: `conn` owns the client socket until it resolves, and this runs only while it is
                    // pending (the select is biased: `conn` is polled first and would have ended it), so the
                    // descriptor is open and still this connection's.
                    reset_on_close(&unsafe { std::os::fd::BorrowedFd::borrow_raw(client_fd) });
                }
                false
            }
        }
    });
    tokio::select! {
        biased;
        r = conn => if let Err(e) = r {
            tracing::debug!(service = %svc.cfg.label, client = %peer, error = %e, "HTTP connection ended with error");
        },
        idle = stop => if idle {
            tracing::debug!(service = %svc.cfg.label, client = %peer, "client idle timeout");
        },
    }
}

/// HTTP/2 limits per client connection (memory is bounded by streams x window): concurrent streams, the flow-control
/// windows a client may fill before we read, and the size of a header block.
const H2_MAX_STREAMS: u32 = 100;
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// Resolves when the connection has had no traffic and no request in flight for `idle`.
async fn idle_watchdog(activity: &Activity, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    let mut wait = idle;
    loop {
        tokio::time::sleep(wait).await;
        let quiet = activity.idle_ms();
        if quiet >= idle_ms && activity.in_flight.load(Ordering::Relaxed) == 0 {
            return;
        }
        wait = Duration::from_millis(idle_ms.saturating_sub(quiet).max(idle_ms / 4).max(1));
    }
}

struct RequestCtx {
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
    peer: SocketAddr,
    vip_port: u16,
    activity: Arc<Activity>,
    /// The client address as a header value, built once per connection for X-Forwarded-For.
    client_ip: Option<HeaderValue>,
    /// The client came over TLS: `X-Forwarded-Proto: https`.
    https: bool,
}

/// Counts a request in flight on the client connection until the response body is done.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Response body to the client: an upstream body (returning its connection to the pool when complete) or ours.
pub enum ProxyBody {
    Upstream {
        inner: Incoming,
        done: Option<Finish>,
    },
    Local(Full<Bytes>),
}

/// What to release when an upstream response body ends.
pub struct Finish {
    sender: Option<Upstream>,
    server: Arc<ServerRuntime>,
    _active: ActiveOwned,
    _in_flight: InFlight,
}

impl Finish {
    fn complete(mut self) {
        if let Some(s) = self.sender.take() {
            self.server.pool.put(s);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            ProxyBody::Upstream { inner, done } => {
                let r = Pin::new(&mut *inner).poll_frame(cx);
                match &r {
                    Poll::Ready(None) => {
                        if let Some(f) = done.take() {
                            f.complete();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => {
                        if let Some(f) = done.take() {
                            f.complete();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // Broken upstream: never reuse this connection.
                        if let Some(mut f) = done.take() {
                            f.sender = None;
                        }
                    }
                    _ => {}
                }
                r
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(b) => b.is_end_stream(),
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(b) => b.size_hint(),
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

fn local_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Local(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn error_page(status: StatusCode, service: &str, what: &str) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    local_response(status, error_html(status.as_u16(), reason, service, what))
}

/// Serves one request; its response class is counted (the access log is the native engine's only).
async fn handle(rc: Arc<RequestCtx>, req: Request<Incoming>) -> Response<ProxyBody> {
    let resp = handle_request(&rc, req).await;
    rc.svc.metrics.codes.record(resp.status().as_u16());
    resp
}

async fn handle_request(rc: &RequestCtx, req: Request<Incoming>) -> Response<ProxyBody> {
    let in_flight = InFlight::new(&rc.activity);
    let svc = &rc.svc;
    if let Some(why) = refusal(&req) {
        tracing::debug!(service = %svc.cfg.label, client = %rc.peer, why, "bad request");
        let mut resp = error_page(
            StatusCode::BAD_REQUEST,
            &svc.cfg.label,
            "The request could not be understood",
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let mut req_in = req;
    let upgrade = is_upgrade(req_in.headers());
    let client_upgrade = if upgrade {
        Some(hyper::upgrade::on(&mut req_in))
    } else {
        None
    };
    let (mut parts, body) = req_in.into_parts();
    let cookie_mode = svc.cfg.persistence.mode == PersistenceMode::HttpCookie;
    let cookie_label = if cookie_mode {
        find_cookie(&parts.headers, &svc.cfg.persistence.cookie_name)
    } else {
        None
    };
    prepare_request(&mut parts, rc.peer.ip(), rc.client_ip.as_ref(), upgrade);
    if rc.https {
        parts.headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("https"),
        );
    }
    // An HTTP/2 client's request goes to the server as HTTP/1.1 (its `:authority` became `Host` above).
    if parts.version >= http::Version::HTTP_2 {
        parts.version = http::Version::HTTP_11;
    }
    let bodyless = body.is_end_stream();
    let mut req = Some(Request::from_parts(parts, UpBody::Client(body)));

    let connect_timeout = Duration::from_millis(svc.cfg.proxy.connect_timeout_ms.max(1));
    let server_timeout = Duration::from_millis(svc.cfg.proxy.server_timeout_ms.max(1));
    let mut route = Route::new(svc, &rc.ctx, rc.peer.ip());
    loop {
        let (server, fallback) = match route.choose(cookie_label.as_deref()) {
            Some(i) => (svc.servers[i].clone(), false),
            None => match &svc.fallback_runtime {
                Some(f) => (f.clone(), true),
                None => {
                    svc.failures.fetch_add(1, Ordering::Relaxed);
                    return local_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        unavailable_page(&svc.cfg.label),
                    );
                }
            },
        };
        let index = if fallback {
            None
        } else {
            svc.index_of(&server.label)
        };
        let target = server.target(rc.vip_port);
        let active = ActiveOwned::new(server.clone());
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only { None } else { server.pool.take() };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(s) => s,
                None => match connect_upstream(&server, target, connect_timeout, svc).await {
                    Ok(s) => s,
                    Err(e) => {
                        server.connect_failures.fetch_add(1, Ordering::Relaxed);
                        if let Some(held) = svc.metrics.failure_logs.connect_failed.admit_now() {
                            tracing::warn!(service = %svc.cfg.label, server = %server.label, %target, error = %e, held_back = held, "connect to real server failed");
                        }
                        break;
                    }
                },
            };
            let Some(r) = req.take() else { break };
            // A reused connection may have been closed by the server just now: keep what is needed to re-send.
            let backup = if reused && bodyless {
                Some(clone_head(&r))
            } else {
                None
            };
            let sent = std::time::Instant::now();
            match tokio::time::timeout(server_timeout, sender.try_send_request(r)).await {
                Ok(Ok(mut resp)) => {
                    svc.metrics.response.observe(sent.elapsed());
                    let mut upstream_upgrade = None;
                    let sender = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        upstream_upgrade = Some(hyper::upgrade::on(&mut resp));
                        None
                    } else {
                        Some(sender)
                    };
                    if let (Some(client_up), Some(server_up)) = (client_upgrade, upstream_upgrade) {
                        spawn_tunnel(
                            client_up,
                            server_up,
                            svc.cfg.label.clone(),
                            server.kill_token(),
                            rc.ctx.shutdown.clone(),
                        );
                    }
                    let insert_cookie = if cookie_mode
                        && !fallback
                        && cookie_label.as_deref() != Some(server.label.as_str())
                    {
                        index.and_then(|i| svc.cookie_value(i))
                    } else {
                        None
                    };
                    return finish_response(
                        resp,
                        sender,
                        server.clone(),
                        active,
                        in_flight,
                        insert_cookie,
                        upgrade,
                    );
                }
                Ok(Err(mut e)) => {
                    tracing::debug!(service = %svc.cfg.label, server = %server.label, error = %e.error(), reused, "upstream request failed");
                    match (e.take_message(), backup) {
                        (Some(r), _) if reused => {
                            req = Some(r);
                            fresh_only = true;
                        }
                        // Refused on a fresh connection: treat like a connect failure.
                        (Some(r), _) => {
                            req = Some(r);
                            break;
                        }
                        (None, Some(b)) => {
                            req = Some(b);
                            fresh_only = true;
                        }
                        (None, None) => {
                            return error_page(
                                StatusCode::BAD_GATEWAY,
                                &svc.cfg.label,
                                "The real server failed to answer",
                            );
                        }
                    }
                }
                Err(_) => {
                    if let Some(held) = svc.metrics.failure_logs.server_timeout.admit_now() {
                        tracing::warn!(service = %svc.cfg.label, server = %server.label, held_back = held, "real server did not answer within the server timeout");
                    }
                    return error_page(
                        StatusCode::GATEWAY_TIMEOUT,
                        &svc.cfg.label,
                        "The real server did not answer in time",
                    );
                }
            }
        }
        // Connect failed: try another server (the request was not sent).
        drop(active);
        if req.is_none() {
            return error_page(
                StatusCode::BAD_GATEWAY,
                &svc.cfg.label,
                "The real server failed to answer",
            );
        }
        match index {
            Some(i) => route.failed(i),
            None => {
                svc.failures.fetch_add(1, Ordering::Relaxed);
                return local_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    unavailable_page(&svc.cfg.label),
                );
            }
        }
    }
}

/// A copy of a body-less request, to re-send it on a fresh connection.
fn clone_head(r: &Request<UpBody>) -> Request<UpBody> {
    let mut c = Request::new(UpBody::Empty);
    *c.method_mut() = r.method().clone();
    *c.uri_mut() = r.uri().clone();
    *c.version_mut() = r.version();
    *c.headers_mut() = r.headers().clone();
    c
}

#[allow(clippy::too_many_arguments)]
fn finish_response(
    resp: Response<Incoming>,
    sender: Option<Upstream>,
    server: Arc<ServerRuntime>,
    active: ActiveOwned,
    in_flight: InFlight,
    insert_cookie: Option<HeaderValue>,
    upgrade: bool,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(&mut parts.headers, upgrade && switching);
    if let Some(v) = insert_cookie {
        parts.headers.append(header::SET_COOKIE, v);
        add_nocache(&mut parts.headers);
    }
    let finish = Finish {
        sender,
        server,
        _active: active,
        _in_flight: in_flight,
    };
    if body.is_end_stream() {
        finish.complete();
        return Response::from_parts(
            parts,
            ProxyBody::Upstream {
                inner: body,
                done: None,
            },
        );
    }
    Response::from_parts(
        parts,
        ProxyBody::Upstream {
            inner: body,
            done: Some(finish),
        },
    )
}

/// `Cache-Control: no-cache="set-cookie"` so shared caches never store the persistence cookie.
fn add_nocache(headers: &mut HeaderMap) {
    const NOCACHE: &str = "no-cache=\"set-cookie\"";
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NOCACHE));
        return;
    }
    append_to_list(headers, header::CACHE_CONTROL, NOCACHE);
}

/// Fold every existing `name` header into one comma-separated value ending with `item`.
fn append_to_list(headers: &mut HeaderMap, name: header::HeaderName, item: &str) {
    let existing: Vec<String> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let value = if existing.is_empty() {
        item.to_string()
    } else {
        format!("{}, {item}", existing.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

async fn connect_upstream(
    server: &Arc<ServerRuntime>,
    target: SocketAddr,
    timeout: Duration,
    svc: &ServiceRuntime,
) -> std::io::Result<Upstream> {
    let started = std::time::Instant::now();
    let stream = crate::listener::connect(target, timeout).await?;
    svc.metrics.connect.observe(started.elapsed());
    let io = TokioIo::new(CountingIo::new(stream, ServerSink(server.clone())));
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(std::io::Error::other)?;
    // Halt with close_existing cuts upstream connections (and so the responses streaming on them).
    let kill = server.kill_token();
    tokio::spawn(async move {
        tokio::select! {
            _ = conn.with_upgrades() => {}
            _ = kill.cancelled() => {}
        }
    });
    Ok(sender)
}

fn spawn_tunnel(
    client: hyper::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    service: String,
    kill: tokio_util::sync::CancellationToken,
    end: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        match tokio::try_join!(client, server) {
            Ok((c, s)) => {
                let mut c = TokioIo::new(c);
                let mut s = TokioIo::new(s);
                tokio::select! {
                    r = tokio::io::copy_bidirectional(&mut c, &mut s) => if let Err(e) = r {
                        tracing::debug!(service = %service, error = %e, "upgraded connection ended");
                    },
                    _ = kill.cancelled() => {}
                    // Shutdown, or the VIP was released (the tunnel outlives its HTTP connection's task).
                    _ = end.cancelled() => {}
                }
            }
            Err(e) => tracing::debug!(service = %service, error = %e, "upgrade failed"),
        }
    });
}

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// What hyper lets through that the native engine refuses (RFC 9112 3.2, and framing this proxy would change): a
/// missing (HTTP/1.1) or repeated `Host`, a `Transfer-Encoding` other than exactly `chunked` (hyper reads
/// `gzip, chunked` as chunked and the gzip would be lost upstream). (A `Content-Length` beside `chunked` never
/// gets here: hyper drops it, and the body goes upstream framed by the chunks, as RFC 9112 6.3 has it.)
fn refusal<B>(req: &Request<B>) -> Option<&'static str> {
    let headers = req.headers();
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == http::Version::HTTP_11 => return Some("no host"),
        (_, Some(_)) => return Some("more than one host"),
        _ => {}
    }
    let te = headers.get_all(header::TRANSFER_ENCODING);
    crate::h1::head::exactly_chunked(te.iter().map(HeaderValue::as_bytes))
        .err()
        .map(|()| "transfer-encoding other than chunked")
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Drop hop-by-hop headers; with `keep_upgrade` the `Connection: upgrade` / `Upgrade` pair survives.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let upgrade_value = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // Headers named by Connection (the usual "keep-alive"/"close" name none; no allocation then).
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| {
            !t.eq_ignore_ascii_case("keep-alive")
                && !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("upgrade")
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if let Some(v) = upgrade_value {
        headers.insert(header::UPGRADE, v);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn prepare_request(
    parts: &mut http::request::Parts,
    client: IpAddr,
    client_value: Option<&HeaderValue>,
    upgrade: bool,
) {
    strip_hop_by_hop(&mut parts.headers, upgrade);
    // Absolute-form request targets go upstream in origin form, with Host taken from them if absent.
    if parts.uri.authority().is_some() {
        if !parts.headers.contains_key(header::HOST)
            && let Some(a) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            parts.headers.insert(header::HOST, v);
        }
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if let Ok(u) = pq.parse() {
            parts.uri = u;
        }
    }
    match client_value {
        Some(v) if !parts.headers.contains_key("x-forwarded-for") => {
            parts.headers.insert("x-forwarded-for", v.clone());
        }
        _ => append_forwarded_for(&mut parts.headers, client),
    }
}

/// Append the client address to `X-Forwarded-For` (one header, comma-separated, as HAProxy's `option forwardfor`).
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    const XFF: &str = "x-forwarded-for";
    if !headers.contains_key(XFF) {
        if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
            headers.insert(XFF, v);
        }
        return;
    }
    append_to_list(
        headers,
        header::HeaderName::from_static(XFF),
        &client.to_string(),
    );
}

/// The value of cookie `name` in the request's `Cookie` headers, decoded.
pub(crate) fn find_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_in(
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        name,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::HOST, HeaderValue::from_static("example"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1");
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        append_forwarded_for(&mut h, "::1".parse().unwrap());
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 10.0.0.9, ::1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn cookie_lookup_and_nocache() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; SERVERID=Overcloud%20controller-1; b=2"),
        );
        assert_eq!(
            find_cookie(&h, "SERVERID").as_deref(),
            Some("Overcloud controller-1")
        );
        assert_eq!(find_cookie(&h, "c"), None);
        let mut r = HeaderMap::new();
        add_nocache(&mut r);
        assert_eq!(
            r.get(header::CACHE_CONTROL).unwrap(),
            "no-cache=\"set-cookie\""
        );
        let mut r = HeaderMap::new();
        r.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        add_nocache(&mut r);
        assert_eq!(
            r.get(header::CACHE_CONTROL).unwrap(),
            "max-age=60, no-cache=\"set-cookie\""
        );
    }
}
