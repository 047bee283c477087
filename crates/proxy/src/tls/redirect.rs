//! `redirect_http`: a plain-HTTP listener on the TLS service's VIP that answers every request with `308 Permanent
//! Redirect` to the same host and path over `https://` (on the service's port 443 if it has it, else its first
//! port, written into the location). Nothing is forwarded to a real server.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::ctx::ConnCtx;
use crate::http::{HEADER_READ_TIMEOUT, register, wait_first_byte};
use crate::state::ServiceRuntime;

/// Serves one connection of the redirect listener of `svc` (a TLS service).
pub(crate) async fn serve_redirect(
    client: std::net::TcpStream,
    peer: SocketAddr,
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
) {
    let Some(client) = register(client, peer, &svc) else {
        return;
    };
    let client_idle = Duration::from_millis(svc.cfg.proxy.client_timeout_ms.max(1));
    let limit = HEADER_READ_TIMEOUT.min(client_idle);
    if !wait_first_byte(&client, limit, &ctx, &svc, peer).await {
        return;
    }
    let https_port = https_port(&svc.cfg.ports);
    let vip = svc.cfg.vip;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let resp = redirect(&req, vip, https_port);
        async move { Ok::<_, Infallible>(resp) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limit)
        // One answer per connection: the client goes to https:// next.
        .keep_alive(false)
        .serve_connection(TokioIo::new(client), service);
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(service = %svc.cfg.label, client = %peer, error = %e, "redirect connection ended with error");
        },
        // Bounds a client that never reads its answer.
        _ = tokio::time::sleep(client_idle) => {}
        _ = ctx.shutdown.cancelled() => {}
    }
}

/// The port written into the location: none for 443.
fn https_port(ports: &[u16]) -> Option<u16> {
    if ports.contains(&443) {
        return None;
    }
    ports.first().copied()
}

/// The 308 answer to `req`.
fn redirect(req: &Request<Incoming>, vip: IpAddr, port: Option<u16>) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    match location(host, vip, port, path).and_then(|l| HeaderValue::from_str(&l).ok()) {
        Some(location) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        None => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"bad host\n")));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp
        }
    }
}

/// `https://HOST[:PORT]PATH`: the host of the request without its port (the VIP when the request names none);
/// `None` for a host that is not a plain host name or address literal.
fn location(host: Option<&str>, vip: IpAddr, port: Option<u16>, path: &str) -> Option<String> {
    let name = match host {
        Some(h) => strip_port(h)?,
        None => match vip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        },
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !valid {
        return None;
    }
    let path = if path.starts_with('/') { path } else { "/" };
    Some(match port {
        Some(p) => format!("https://{name}:{p}{path}"),
        None => format!("https://{name}{path}"),
    })
}

/// `host[:port]` or `[v6][:port]` without the port.
fn strip_port(h: &str) -> Option<String> {
    if let Some(rest) = h.strip_prefix('[') {
        let (addr, _) = rest.split_once(']')?;
        return Some(format!("[{addr}]"));
    }
    Some(match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => h.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let vip: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(
            location(Some("horizon.example.org:80"), vip, None, "/a?b=1").as_deref(),
            Some("https://horizon.example.org/a?b=1")
        );
        assert_eq!(
            location(Some("Horizon.example.org"), vip, Some(8443), "/").as_deref(),
            Some("https://Horizon.example.org:8443/")
        );
        assert_eq!(
            location(Some("[::1]:80"), vip, None, "/x").as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            location(None, vip, None, "*").as_deref(),
            Some("https://192.0.2.1/")
        );
        assert_eq!(location(Some("evil\r\nx"), vip, None, "/"), None);
        assert_eq!(location(Some("a/b"), vip, None, "/"), None);
        assert_eq!(https_port(&[8443, 443]), None);
        assert_eq!(https_port(&[8443]), Some(8443));
    }
}
