//! One accepted connection of a TLS service: wait for the first byte (holding nothing), the handshake within the
//! handshake timeout (counted, failures by reason), then HTTP as ALPN agreed: h2 on the hyper engine's request
//! path; HTTP/1.1 on the native engine when it serves (`native`), else on hyper's too.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustls::{HandshakeKind, ProtocolVersion};

use super::failure_reason;
use crate::ctx::ConnCtx;
use crate::http::hyper_engine::{Activity, Conn, Protocol, serve_io};
use crate::http::io::{ClientSink, CountingIo};
use crate::http::{HEADER_READ_TIMEOUT, register, wait_first_byte};
use crate::metrics::HandshakeFailure;
use crate::state::{Active, ServiceRuntime};
use crate::vip_conns::reset_on_close;

/// Serves one client connection of a TLS service (`svc.tls` is set; without it the connection is closed).
pub(crate) async fn serve_tls(
    client: std::net::TcpStream,
    peer: SocketAddr,
    vip_port: u16,
    svc: Arc<ServiceRuntime>,
    ctx: ConnCtx,
    native: bool,
) {
    let Some(client) = register(client, peer, &svc) else {
        return;
    };
    let Some(tls) = svc.tls.clone() else {
        tracing::error!(service = %svc.cfg.label, "TLS connection on a service without TLS; closed");
        return;
    };
    let _svc_active = Active::new(&svc.counters);
    let client_idle = Duration::from_millis(svc.cfg.proxy.client_timeout_ms.max(1));
    let limit = HEADER_READ_TIMEOUT.min(client_idle);
    // Until the first byte arrives, an idle client costs only this small future: no TLS state yet.
    if !wait_first_byte(&client, limit, &ctx, &svc, peer).await {
        return;
    }
    let counters = &svc.metrics.tls;
    let activity = Arc::new(Activity::new());
    let client_fd = client.as_raw_fd();
    let io = CountingIo::unbatched(
        client,
        ClientSink {
            counters: svc.counters.clone(),
            activity: activity.clone(),
        },
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    // Boxed: the handshake's state lives on the heap only while it runs.
    let mut handshake = Box::pin(tokio::time::timeout(limit, acceptor.accept(io)));
    let mut stream = tokio::select! {
        r = &mut handshake => match r {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let why = failure_reason(&e);
                counters.failed(why);
                if why == HandshakeFailure::Closed {
                    // Clients going away mid-handshake are common (load generators stopping, scanners): counted only.
                    tracing::debug!(service = %svc.cfg.label, client = %peer, error = %e, "TLS handshake: the client went away");
                } else if let Some(held) = svc.metrics.failure_logs.tls_handshake.admit_now() {
                    tracing::info!(service = %svc.cfg.label, client = %peer, reason = why.label(), error = %e, held_back = held, "TLS handshake failed");
                }
                return;
            }
            Err(_) => {
                counters.failed(HandshakeFailure::Timeout);
                tracing::debug!(service = %svc.cfg.label, client = %peer, "TLS handshake timed out");
                return;
            }
        },
        _ = ctx.shutdown.cancelled() => {
            if ctx.released() {
                // SAFETY: `handshake` owns the client socket and is alive (a local, dropped after this), so the
                // descriptor is open and still this connection's.
                reset_on_close(&unsafe { std::os::fd::BorrowedFd::borrow_raw(client_fd) });
            }
            return;
        }
    };
    // The finished handshake's future (its timer entry) is not kept for the connection's life.
    drop(handshake);
    stream.get_mut().0.set_batching(true);
    let (_, session) = stream.get_ref();
    counters.handshakes.fetch_add(1, Ordering::Relaxed);
    match session.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => counters.tls13.fetch_add(1, Ordering::Relaxed),
        _ => counters.tls12.fetch_add(1, Ordering::Relaxed),
    };
    if session.handshake_kind() == Some(HandshakeKind::Resumed) {
        counters.resumed.fetch_add(1, Ordering::Relaxed);
    }
    let protocol = if session.alpn_protocol() == Some(b"h2") {
        counters.h2.fetch_add(1, Ordering::Relaxed);
        Protocol::H2
    } else {
        counters.http1.fetch_add(1, Ordering::Relaxed);
        Protocol::Https1
    };
    if native && protocol == Protocol::Https1 {
        let (io, session) = stream.into_inner();
        // The handshake's last flight may still be in this thread's write batch.
        let Ok(client) = io.into_flushed().await else {
            return;
        };
        let served = Box::pin(crate::h1::serve_tls_requests(
            client,
            session,
            peer,
            vip_port,
            svc.clone(),
            ctx,
        ));
        served.await;
        return;
    }
    let conn = Conn {
        peer,
        vip_port,
        svc: svc.clone(),
        ctx,
        client_idle,
        activity,
        client_fd,
    };
    // A separate statement: a temporary in the awaited expression would keep its slot in this future.
    let served = Box::pin(serve_io(stream, conn, protocol));
    served.await;
}
