//! HTTP mode: the seam between the proxy and an HTTP implementation ([`HttpEngine`]) and what both engines share
//! (registering an accepted connection, the wait for a client's first byte, the header timeout, error pages, the
//! persistence cookie's encoding). The engines: [`hyper_engine`] (hyper 1.x, with its counting I/O in [`io`]) and
//! the native HTTP/1.1 engine in `crate::h1`.

pub(crate) mod hyper_engine;
pub(crate) mod io;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::ctx::ConnCtx;
use crate::state::ServiceRuntime;
use crate::vip_conns::reset_on_close;

/// One connection's work, made where it runs (so that its sockets register with that runtime's reactor).
pub type ConnectionJob = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The seam between the proxy and an HTTP implementation: serve one accepted client connection of `svc` until it
/// ends. Server choice, persistence and counters come from the service runtime; an engine only speaks HTTP.
pub trait HttpEngine: Send + Sync + 'static {
    /// Runs `job` (a TLS connection: handshake, then HTTP) where this engine serves its connections; the future
    /// ends with the connection. By default in the task that awaits it.
    fn run(
        &self,
        peer: SocketAddr,
        job: ConnectionJob,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let _ = peer;
        Box::pin(async move { job().await })
    }

    /// Whether this engine serves HTTP/1.1 over TLS itself; otherwise TLS connections are served by the hyper
    /// engine's request path (h2 always is).
    fn serves_tls_http1(&self) -> bool {
        false
    }

    /// Serves one client connection. `client` is non-blocking and not registered with any reactor yet, so the
    /// engine registers it on the runtime that will serve it.
    fn serve(
        &self,
        client: std::net::TcpStream,
        peer: SocketAddr,
        vip_port: u16,
        svc: Arc<ServiceRuntime>,
        ctx: ConnCtx,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Registers an accepted connection with the current runtime's reactor. A failure is logged and the connection
/// closed.
pub(crate) fn register(
    client: std::net::TcpStream,
    peer: SocketAddr,
    svc: &ServiceRuntime,
) -> Option<TcpStream> {
    TcpStream::from_std(client)
        .map_err(|error| {
            tracing::error!(service = %svc.cfg.label, client = %peer, %error, "cannot register the connection; closed")
        })
        .ok()
}

/// Most time a client may take to send a complete request head (slowloris guard), capped by the client timeout.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits (holding nothing) until the client's first byte is there; false when the connection is to be dropped
/// instead (closed, no request within `limit`, shutdown, its VIP released: then the client is reset).
pub(crate) async fn wait_first_byte(
    client: &TcpStream,
    limit: Duration,
    ctx: &ConnCtx,
    svc: &ServiceRuntime,
    peer: SocketAddr,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            r = tokio::time::timeout_at(deadline, client.readable()) => match r {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return false,
                Err(_) => {
                    tracing::debug!(service = %svc.cfg.label, client = %peer, "no request within the header timeout");
                    return false;
                }
            },
            _ = ctx.shutdown.cancelled() => {
                if ctx.released() {
                    reset_on_close(client);
                }
                return false;
            }
        }
        // Readiness can be spurious: peek, and go back to waiting (readiness cleared) if nothing is there.
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match client.try_io(tokio::io::Interest::READABLE, || {
            socket2::SockRef::from(client).peek(&mut probe)
        }) {
            Ok(_) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return false,
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page served when no real server (and no fallback server) can answer.
pub fn unavailable_page(service: &str) -> String {
    let s = html_escape(service);
    format!(
        "<html><head><title>503 Service Unavailable</title></head><body><h1>503 Service Unavailable</h1>\
         <p>No real server is available for service <b>{s}</b>.</p></body></html>\n"
    )
}

/// The page of a proxy error (`what` happened, on `service`).
pub(crate) fn error_html(code: u16, reason: &str, service: &str, what: &str) -> String {
    let s = html_escape(service);
    format!(
        "<html><body><h1>{code} {reason}</h1><p>{what} (service <b>{s}</b>).</p></body></html>\n"
    )
}

/// The value of cookie `name` among `Cookie` field values, decoded.
pub(crate) fn cookie_in<'a>(values: impl Iterator<Item = &'a str>, name: &str) -> Option<String> {
    values
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| decode_cookie_value(v.trim().trim_matches('"')))
}

/// Server labels are free text; a cookie value must be a token: percent-encode anything else.
pub(crate) fn encode_cookie_value(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn decode_cookie_value(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = bytes.get(i + 1..i + 3)
            && let Ok(s) = std::str::from_utf8(h)
            && let Ok(b) = u8::from_str_radix(s, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unavailable_page_names_the_service_escaped() {
        let p = unavailable_page("horizon<x>");
        assert!(p.contains("horizon&lt;x&gt;"));
    }

    proptest! {
        #[test]
        fn cookie_value_roundtrip(label in ".{0,40}") {
            let enc = encode_cookie_value(&label);
            prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert_eq!(decode_cookie_value(&enc), label);
        }
    }
}
