//! The admin listeners' accept loops: HTTP(S) on `[admin] listen`, the local UNIX socket, and the
//! read-only metrics listener on `[metrics] listen` (`GET /metrics` and nothing else).
//!
//! Both bound what a client can hold: at most `max_connections` connections at once (further
//! ones wait in the kernel's backlog), a request head must arrive within `header_timeout` (also
//! what closes an idle keep-alive connection), a TLS handshake within `handshake_timeout`, and a
//! request body may not exceed [`MAX_BODY`] (the API's POSTs carry none).

use crate::auth::{Authenticator, Credentials};
use crate::backend::AdminBackend;
use crate::routes::{error_response, route};
use crate::rules::HttpRules;
use crate::tls::TlsIdentity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tandem_status::AdminEndpoint;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

/// Largest request body read (bigger: 413).
pub const MAX_BODY: usize = 64 * 1024;

/// What one client may hold on a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// How the HTTP(S) listener serves.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `[admin] user` and the password file's hash; `None`: POSTs over HTTP are refused.
    pub credentials: Option<Credentials>,
    /// `[admin] hostnames`: names accepted in `Host` besides IP literals and `localhost`.
    pub hostnames: Vec<String>,
    /// HTTPS when set.
    pub tls: Option<TlsIdentity>,
    /// GETs other than `/metrics` need credentials (set for a listener off loopback).
    pub reads_need_credentials: bool,
    pub limits: Limits,
}

impl HttpOptions {
    /// Defaults for a listener on `listen`: reads open only on loopback, no TLS, no credentials.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            credentials: None,
            hostnames: Vec::new(),
            tls: None,
            reads_need_credentials: !listen.ip().is_loopback(),
            limits: Limits::default(),
        }
    }
}

/// One listener's shared state.
struct Listener<B> {
    backend: Arc<B>,
    endpoint: Arc<AdminEndpoint>,
    /// `None` on the UNIX socket (its permissions are the authentication) and on the metrics
    /// listener (it serves nothing else).
    rules: Option<HttpRules>,
    limits: Limits,
    /// The `[metrics] listen` listener: `GET /metrics` only, 404 for every other path.
    metrics_only: bool,
}

/// Serve the HTTP(S) admin endpoint on an already bound listener until the task is dropped.
pub async fn serve<B: AdminBackend>(
    listener: TcpListener,
    backend: Arc<B>,
    options: HttpOptions,
    endpoint: Arc<AdminEndpoint>,
) {
    let acceptor = options
        .tls
        .as_ref()
        .map(|tls| tokio_rustls::TlsAcceptor::from(tls.config.clone()));
    let shared = Arc::new(Listener {
        backend,
        endpoint,
        rules: Some(HttpRules {
            tls: options.tls.is_some(),
            reads_need_credentials: options.reads_need_credentials,
            hostnames: options
                .hostnames
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            auth: Authenticator::new(options.credentials),
        }),
        limits: options.limits,
        metrics_only: false,
    });
    accept_loop(listener, options.limits, "admin", move |stream, peer| {
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        async move {
            match acceptor {
                None => serve_connection(stream, shared, peer).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        shared.limits.handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls)) => serve_connection(tls, shared, peer).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "admin TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                    }
                }
            }
        }
    })
    .await;
}

/// Serve the admin API on the local UNIX socket (no HTTP credentials) until the task is dropped.
pub async fn serve_unix<B: AdminBackend>(
    listener: UnixListener,
    backend: Arc<B>,
    limits: Limits,
    endpoint: Arc<AdminEndpoint>,
) {
    let shared = Arc::new(Listener {
        backend,
        endpoint,
        rules: None,
        limits,
        metrics_only: false,
    });
    accept_loop(listener, limits, "admin socket", move |stream, peer| {
        serve_connection(stream, shared.clone(), peer)
    })
    .await;
}

/// Serve `GET /metrics` (Prometheus text, no credentials) and nothing else on an already bound
/// listener until the task is dropped: what Prometheus scrapes without reaching the admin API.
pub async fn serve_metrics<B: AdminBackend>(
    listener: TcpListener,
    backend: Arc<B>,
    limits: Limits,
    endpoint: Arc<AdminEndpoint>,
) {
    let shared = Arc::new(Listener {
        backend,
        endpoint,
        rules: None,
        limits,
        metrics_only: true,
    });
    accept_loop(listener, limits, "metrics", move |stream, peer| {
        serve_connection(stream, shared.clone(), peer)
    })
    .await;
}

/// A listener the accept loop takes connections from, each with how to name its peer in logs.
trait Accept {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<(Self::Stream, String)>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<(Self::Stream, String)> {
        let (stream, peer) = self.accept().await?;
        Ok((stream, peer.to_string()))
    }
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<(Self::Stream, String)> {
        let (stream, _) = self.accept().await?;
        let peer = match stream.peer_cred() {
            Ok(cred) => format!(
                "socket (uid {}, pid {})",
                cred.uid(),
                cred.pid().unwrap_or_default()
            ),
            Err(_) => "socket".to_owned(),
        };
        Ok((stream, peer))
    }
}

/// Every listener's loop, until the task is dropped: a slot is taken before accepting (beyond
/// `max_connections` clients wait in the kernel's backlog), a failed accept is logged and retried after
/// 50 ms, and each connection is served on its own task that holds its slot.
async fn accept_loop<L, F, Fut>(listener: L, limits: Limits, what: &'static str, serve: F)
where
    L: Accept,
    F: Fn(L::Stream, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept_one().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "{what} accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let connection = serve(stream, peer);
        tokio::spawn(async move {
            let _slot = slot;
            connection.await;
        });
    }
}

async fn serve_connection<B, I>(io: I, shared: Arc<Listener<B>>, peer: String)
where
    B: AdminBackend,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = shared.limits.header_timeout;
    let peer = Arc::new(peer);
    let log_peer = peer.clone();
    let service = service_fn(move |request| {
        let shared = shared.clone();
        let peer = peer.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(request, &shared, &peer).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(16 * 1024);
    if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%error, peer = %log_peer, "admin connection ended with an error");
    }
}

async fn handle<B: AdminBackend>(
    request: Request<Incoming>,
    shared: &Listener<B>,
    peer: &str,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if let Some(rules) = &shared.rules
        && let Err(refusal) = rules.admit(&parts).await
    {
        if refusal.status == StatusCode::UNAUTHORIZED || parts.method != hyper::Method::GET {
            tracing::warn!(
                %peer,
                method = %parts.method,
                path = parts.uri.path(),
                status = refusal.status.as_u16(),
                "admin request refused: {}",
                refusal.message
            );
        }
        let mut response = error_response(refusal.status, &refusal.message);
        if refusal.status == StatusCode::UNAUTHORIZED
            && let Ok(value) = "Basic realm=\"tandem\"".parse()
        {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        return response;
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {MAX_BODY} bytes"),
        )
    };
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return too_large();
    }
    // The API's requests carry no body; read (bounded) and drop it so keep-alive works.
    if Limited::new(body, MAX_BODY).collect().await.is_err() {
        return too_large();
    }
    if shared.metrics_only {
        return metrics_only(&parts, &*shared.backend);
    }
    route(&parts, &*shared.backend, &shared.endpoint, peer).await
}

/// The metrics listener's one route.
fn metrics_only<B: AdminBackend>(
    parts: &hyper::http::request::Parts,
    backend: &B,
) -> Response<Full<Bytes>> {
    match (parts.uri.path(), &parts.method) {
        ("/metrics", &hyper::Method::GET) => {
            let mut response = Response::new(Full::new(Bytes::from(backend.metrics())));
            if let Ok(value) = "text/plain; version=0.0.4; charset=utf-8".parse() {
                response
                    .headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, value);
            }
            response
        }
        ("/metrics", _) => error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET /metrics is served here",
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "this is the metrics listener: only GET /metrics is served here",
        ),
    }
}
