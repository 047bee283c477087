//! The node's admin endpoint (`[admin] listen` in `node.toml`, default `127.0.0.1:9080`).
//!
//! It owns only HTTP: routing, basic authentication of state-changing calls, the System Overview
//! page and the wire form of the JSON API. What the answers contain comes from an [`AdminBackend`]
//! that the daemon implements, so this crate knows nothing about the proxy or the election.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | System Overview page (HTML, refreshes itself) |
//! | GET | `/api/status` | the node's status as JSON (schema in `docs/admin-api.md`) |
//! | GET | `/metrics` | Prometheus text format |
//! | POST | `/api/servers/{service}/{server}/{online\|drain\|halt}` | appliance buttons; `?close=1` with halt closes existing connections |
//! | POST | `/api/takeover`, `/api/release`, `/api/reload` | cluster actions |

mod page;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use page::{render_overview, urlencode};
pub use tandem_status::Status;

/// What an operator can do to one real server (the appliance's buttons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAction {
    Online,
    Drain,
    /// `close_existing`: also close the connections the server already has.
    Halt {
        close_existing: bool,
    },
}

/// Outcome of an action: a human message, or an error with the HTTP status to answer with.
pub type ActionResult = Result<String, ActionError>;

#[derive(Debug, Clone)]
pub struct ActionError {
    pub status: u16,
    pub message: String,
}

impl ActionError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            message: message.into(),
        }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            status: 409,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: 422,
            message: message.into(),
        }
    }
}

/// Implemented by the daemon: the admin endpoint only asks and forwards.
pub trait AdminBackend: Send + Sync + 'static {
    /// The status document served at `/api/status` and rendered by `/`.
    fn status(&self) -> Status;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    fn server_action(&self, service: &str, server: &str, action: ServerAction) -> ActionResult;
    fn takeover(&self) -> impl Future<Output = ActionResult> + Send;
    fn release(&self) -> impl Future<Output = ActionResult> + Send;
    fn reload(&self) -> impl Future<Output = ActionResult> + Send;
}

/// Basic-auth credentials required for POST requests; GET stays open on the node-local address
/// so Prometheus and the page need no secret.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Serve the admin endpoint on an already bound listener until the task is dropped.
pub async fn serve<B: AdminBackend>(
    listener: TcpListener,
    backend: Arc<B>,
    credentials: Option<Credentials>,
) {
    let credentials = Arc::new(credentials);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let backend = backend.clone();
        let credentials = credentials.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let backend = backend.clone();
                let credentials = credentials.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        route(request, &*backend, credentials.as_ref().as_ref(), peer).await,
                    )
                }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, %peer, "admin connection ended with an error");
            }
        });
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    respond(status, "application/json", body)
}

fn action_response(result: ActionResult) -> Response<Full<Bytes>> {
    match result {
        Ok(message) => json(
            StatusCode::OK,
            &serde_json::json!({ "ok": true, "message": message }),
        ),
        Err(error) => json(
            StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &serde_json::json!({ "ok": false, "error": error.message }),
        ),
    }
}

/// Timing-safe comparison of the presented basic-auth header with the configured one.
fn authorized(request: &Request<Incoming>, credentials: Option<&Credentials>) -> bool {
    let Some(credentials) = credentials else {
        return true;
    };
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.user, credentials.password))
    );
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    // Comparing digests keeps the comparison time independent of where the strings differ.
    let digest = |bytes: &[u8]| ring::digest::digest(&ring::digest::SHA256, bytes);
    digest(presented).as_ref() == digest(expected.as_bytes()).as_ref()
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = segment
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route<B: AdminBackend>(
    request: Request<Incoming>,
    backend: &B,
    credentials: Option<&Credentials>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let method = request.method().clone();
    if method == Method::POST && !authorized(&request, credentials) {
        tracing::warn!(%peer, %path, "admin action refused: bad credentials");
        let mut response = respond(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "authentication required\n",
        );
        if let Ok(value) = "Basic realm=\"tandem\"".parse() {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        return response;
    }
    // The body of a POST carries nothing we need; read (bounded) and drop it so keep-alive works.
    let _ = http_body_util::Limited::new(request.into_body(), 64 * 1024)
        .collect()
        .await;
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, []) => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            render_overview(&backend.status()),
        ),
        (&Method::GET, ["api", "status"]) => json(StatusCode::OK, &backend.status()),
        (&Method::GET, ["metrics"]) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            backend.metrics(),
        ),
        (&Method::POST, ["api", "servers", service, server, action]) => {
            let close_existing = query
                .split('&')
                .any(|pair| pair == "close=1" || pair == "close=true");
            let action = match *action {
                "online" => ServerAction::Online,
                "drain" => ServerAction::Drain,
                "halt" => ServerAction::Halt { close_existing },
                other => {
                    return action_response(Err(ActionError::invalid(format!(
                        "unknown server action {other:?}: use online, drain or halt"
                    ))));
                }
            };
            tracing::info!(%peer, service, server, ?action, "admin server action");
            action_response(backend.server_action(service, server, action))
        }
        (&Method::POST, ["api", "takeover"]) => {
            tracing::info!(%peer, "admin takeover");
            action_response(backend.takeover().await)
        }
        (&Method::POST, ["api", "release"]) => {
            tracing::info!(%peer, "admin release");
            action_response(backend.release().await)
        }
        (&Method::POST, ["api", "reload"]) => {
            tracing::info!(%peer, "admin reload");
            action_response(backend.reload().await)
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "ok": false, "error": format!("no such endpoint: {method} {path}") }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_labels_and_garbage() {
        assert_eq!(
            percent_decode("Overcloud-controller-1"),
            "Overcloud-controller-1"
        );
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
        assert_eq!(percent_decode("%"), "%");
    }
}
