//! One client connection of the native engine ([`Conn`]): reading request heads, choosing the server (with retry
//! and fallback), local answers and the lingering close. Forwarding one request to one upstream connection is in
//! `forward.rs`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::body::{Body, Outcome};
use super::client::Client;
use super::head::{self, RequestInfo};
use super::timer::{Phase, Timer};
use crate::access_log::{AccessLog, HttpLine, request_line};
use crate::buffer::{Buf, Read};
use crate::ctx::ConnCtx;
use crate::http::{error_html, unavailable_page};
use crate::pool::h1_conn::UpConn;
use crate::route::Route;
use crate::shared::thread_tag;
use crate::state::{ActiveOwned, Counters, ServerRuntime, ServiceRuntime};

/// Most time spent reading what a client still sends after we decided to close (so our last response is not cut
/// by a reset), and most bytes read then.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// An error page after which the connection closes.
pub(super) fn closing_error(status: u16, reason: &str, service: &str, what: &str) -> Vec<u8> {
    head::local_response(
        status,
        reason,
        &error_html(status, reason, service, what),
        false,
        false,
    )
}

/// What the access log says of the request being served.
pub(super) struct ReqLog {
    pub(super) accepted: SystemTime,
    pub(super) started: Instant,
    pub(super) request: Vec<u8>,
    pub(super) server: Option<Arc<ServerRuntime>>,
    pub(super) connect: Option<Duration>,
    pub(super) response: Option<Duration>,
    /// 0 until an answer was sent (logged as -1).
    pub(super) status: u16,
}

pub(super) struct Conn<'a> {
    pub(super) client: &'a Client,
    pub(super) peer: SocketAddr,
    pub(super) vip_port: u16,
    pub(super) svc: &'a Arc<ServiceRuntime>,
    pub(super) ctx: &'a ConnCtx,
    pub(super) client_ip: String,
    pub(super) cookie_name: Option<String>,
    /// Bytes read from the client and not yet used.
    pub(super) buf: Option<Buf>,
    /// The head to send upstream / to the client.
    pub(super) up_head: Vec<u8>,
    pub(super) down_head: Vec<u8>,
    pub(super) timer: &'a Timer,
    pub(super) header_timeout: Duration,
    pub(super) client_idle: Duration,
    pub(super) server_timeout: Duration,
    pub(super) connect_timeout: Duration,
    /// The access log, when this service is logged.
    pub(super) log: Option<&'a AccessLog>,
    /// The request being logged.
    pub(super) req: Option<ReqLog>,
    /// This connection's bytes (counted only with an access log) and where the current request's began.
    pub(super) bytes: Counters,
    pub(super) logged_bytes: (u64, u64),
}

impl Conn<'_> {
    pub(super) async fn run(&mut self) {
        loop {
            let Some(info) = self.read_request_head().await else {
                return;
            };
            self.begin_log();
            let keep = self.exchange(&info).await;
            self.finish_log();
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
                match head::parse_request_from(
                    buf.filled(),
                    self.cookie_name.as_deref(),
                    &self.client_ip,
                    self.client.is_tls(),
                    &mut self.up_head,
                ) {
                    Ok(Some(info)) => return Some(info),
                    Ok(None) if buf.is_full() => {
                        // No line end in a full buffer: the request line alone is too long (RFC 9112 3: 414).
                        if buf.filled().contains(&b'\n') {
                            self.reject(431, "Request Header Fields Too Large").await;
                        } else {
                            self.reject(414, "URI Too Long").await;
                        }
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
            match self.client.fill(buf) {
                Ok(Read::Data(n)) => self.read_in(n),
                Ok(Read::Empty) => {}
                Ok(Read::Eof) | Err(_) => return None,
            }
        }
    }

    /// Starts the access-log record of the request whose head is at the start of the buffer.
    #[inline]
    fn begin_log(&mut self) {
        if self.log.is_some() {
            self.begin_log_record();
        }
    }

    #[inline(never)]
    fn begin_log_record(&mut self) {
        let head = self.buf.as_ref().map_or(&[][..], |b| b.filled());
        self.req = Some(ReqLog {
            accepted: SystemTime::now(),
            started: Instant::now(),
            request: request_line(head).to_vec(),
            server: None,
            connect: None,
            response: None,
            status: 0,
        });
    }

    /// Writes the access-log line of the request served (if logged).
    #[inline]
    pub(super) fn finish_log(&mut self) {
        if self.req.is_some() {
            self.write_log_line();
        }
    }

    #[inline(never)]
    fn write_log_line(&mut self) {
        let (Some(log), Some(req)) = (&self.log, self.req.take()) else {
            return;
        };
        let now = (
            self.bytes.bytes_in.load(Ordering::Relaxed),
            self.bytes.bytes_out.load(Ordering::Relaxed),
        );
        let (was_in, was_out) = std::mem::replace(&mut self.logged_bytes, now);
        let line = HttpLine {
            client: self.peer,
            accepted: req.accepted,
            frontend: SocketAddr::new(self.svc.cfg.vip, self.vip_port),
            service: &self.svc.cfg.label,
            server: req.server.as_ref().map(|s| s.label.as_str()),
            connect: req.connect,
            response: req.response,
            total: req.started.elapsed(),
            status: req.status,
            bytes_out: now.1 - was_out,
            bytes_in: now.0 - was_in,
            request: &req.request,
        }
        .format();
        log.send(line, &self.svc.metrics);
    }

    /// A response head with `status` is going to the client: counted by class, and logged.
    pub(super) fn answered(&mut self, status: u16) {
        self.svc.metrics.codes.record(status);
        if let Some(req) = &mut self.req {
            req.status = status;
        }
    }

    /// Client bytes read.
    fn read_in(&self, n: usize) {
        self.svc.counters.add_in(n);
        if self.log.is_some() {
            self.bytes.add_in(n);
        }
    }

    /// Answers a bad request and closes.
    async fn reject(&mut self, status: u16, reason: &str) {
        self.begin_log();
        self.answered(status);
        let page = closing_error(
            status,
            reason,
            &self.svc.cfg.label,
            "The request could not be understood",
        );
        let _ = self.write_client(&page, &[]).await;
        self.finish_log();
        self.linger_close().await;
    }

    pub(super) async fn write_client(&self, a: &[u8], b: &[u8]) -> io::Result<()> {
        self.client.write_two(a, b).await?;
        self.svc.counters.add_out(a.len() + b.len());
        if self.log.is_some() {
            self.bytes.add_out(a.len() + b.len());
        }
        Ok(())
    }

    /// Sends a local response; keeps the connection only if the request was entirely read.
    pub(super) async fn local(
        &mut self,
        status: u16,
        reason: &str,
        html: &str,
        info: &RequestInfo,
        body: &Body,
    ) -> bool {
        let keep = info.keep_alive && body.done;
        self.answered(status);
        let page = head::local_response(status, reason, html, keep, info.is_head);
        self.write_client(&page, &[]).await.is_ok() && keep
    }

    /// Closes the way HTTP servers do: send FIN, then read (and drop) what the client still sends for a moment, so
    /// that closing with unread data does not reset the connection and destroy the response just sent.
    async fn linger_close(&mut self) {
        if let Some(b) = self.buf.take() {
            b.give();
        }
        self.client.close_write().await;
        self.timer.clear(Phase::Idle);
        let mut scratch = [0u8; 4096];
        let mut read = 0;
        let _ = tokio::time::timeout(LINGER, async {
            while read < LINGER_BYTES {
                if self.client.readable().await.is_err() {
                    return;
                }
                match self.client.try_discard(&mut scratch) {
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
            if let Some(req) = &mut self.req {
                req.server = Some(server.clone());
            }
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
                        let started = Instant::now();
                        match crate::listener::connect(target, self.connect_timeout).await {
                            Ok(stream) => {
                                let took = started.elapsed();
                                svc.metrics.connect.observe(took);
                                if let Some(req) = &mut self.req {
                                    req.connect = Some(took);
                                }
                                UpConn {
                                    stream,
                                    buf: None,
                                    home: thread_tag(),
                                }
                            }
                            Err(e) => {
                                server.connect_failures.fetch_add(1, Ordering::Relaxed);
                                if let Some(held) =
                                    svc.metrics.failure_logs.connect_failed.admit_now()
                                {
                                    tracing::warn!(service = %svc.cfg.label, server = %server.label, %target, error = %e, held_back = held, "connect to real server failed");
                                }
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
}
