//! One attempt of a request on one upstream connection ([`Conn::forward`]): the head and body upstream, interim
//! responses, the response head and body back, the tunnel after a 101, and the error answers on the way.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::body::{Body, BodyFailure, Outcome};
use super::chunked::ChunkError;
use super::client::Client;
use super::conn::{Conn, closing_error};
use super::head::{self, Framing, RequestInfo, ResponseInfo};
use super::io::{readable, write_two};
use super::timer::Phase;
use crate::buffer::{Buf, Read};
use crate::http::error_html;
use crate::pool::h1_conn::UpConn;
use crate::state::ServerRuntime;

impl Conn<'_> {
    /// One attempt of a request on one upstream connection.
    pub(super) async fn forward(
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
        // When the server had the request (or what it answered early to): what the response time counts from.
        let mut waiting_since: Option<Duration> = None;
        let response = loop {
            if !body.done {
                match self.relay_request_body(&up, body, server, &kill).await {
                    Ok(()) => {}
                    Err(BodyFailure::Client) => return Outcome::Done { keep: false },
                    Err(BodyFailure::Upstream) => return self.gateway_error(info, body).await,
                    Err(BodyFailure::Malformed(e)) => return self.bad_body(e).await,
                }
            }
            let now = self.timer.set(Phase::WaitingResponse, self.server_timeout);
            waiting_since.get_or_insert(now);
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
                Ok(r) => {
                    if let Some(since) = waiting_since {
                        let took = self.timer.since().saturating_sub(since);
                        svc.metrics.response.observe(took);
                        if let Some(req) = &mut self.req {
                            req.response = Some(took);
                        }
                    }
                    break r;
                }
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
        self.answered(response.status);
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
        self.answered(400);
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
            match self.client.fill(buf) {
                Ok(Read::Data(n)) => {
                    // (not `read_in`: `buf` borrows `self.buf`)
                    self.svc.counters.add_in(n);
                    if self.log.is_some() {
                        self.bytes.add_in(n);
                    }
                }
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
        let client = match self.client {
            Client::Plain(tcp) => tcp,
            Client::Tls(_) => {
                tokio::select! {
                    end = self.tunnel_tls(&up, server) => {
                        tracing::debug!(service = %svc.cfg.label, client = %self.peer, end = ?end, "upgraded connection ended");
                    }
                    _ = kill.cancelled() => {}
                }
                return Outcome::Done { keep: false };
            }
        };
        tokio::select! {
            end = crate::relay::tasks::relay(client, &up.stream, self.client_idle, self.server_timeout, &svc.counters, &server.counters, self.log.as_ref().map(|_| &self.bytes)) => {
                tracing::debug!(service = %svc.cfg.label, client = %self.peer, end = ?end, "upgraded connection ended");
            }
            _ = kill.cancelled() => {}
        }
        Outcome::Done { keep: false }
    }

    /// The tunnel after a 101 when the client speaks TLS: decrypted client bytes to the server, server bytes
    /// encrypted to the client, until either side ends or stays silent past its timeout.
    async fn tunnel_tls(&mut self, up: &UpConn, server: &ServerRuntime) -> io::Result<()> {
        let svc = self.svc;
        let mut from_client = Buf::take();
        let mut from_server = Buf::take();
        let idle = self.client_idle.min(self.server_timeout);
        let r = loop {
            let client_ready = tokio::select! {
                r = self.client.readable() => { if let Err(e) = r { break Err(e) } true }
                r = up.stream.readable() => { if let Err(e) = r { break Err(e) } false }
                _ = tokio::time::sleep(idle) => break Ok(()),
            };
            if client_ready {
                match self.client.fill(&mut from_client) {
                    Ok(Read::Data(n)) => {
                        svc.counters.add_in(n);
                        server.counters.add_in(n);
                        if let Err(e) = write_two(&up.stream, from_client.filled(), &[]).await {
                            break Err(e);
                        }
                        from_client.consume(n);
                    }
                    Ok(Read::Empty) => {}
                    Ok(Read::Eof) => break Ok(()),
                    Err(e) => break Err(e),
                }
            } else {
                match from_server.fill(&up.stream) {
                    Ok(Read::Data(n)) => {
                        server.counters.add_out(n);
                        if let Err(e) = self.write_client(from_server.filled(), &[]).await {
                            break Err(e);
                        }
                        from_server.consume(n);
                    }
                    Ok(Read::Empty) => {}
                    Ok(Read::Eof) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        };
        from_client.give();
        from_server.give();
        r
    }
}
