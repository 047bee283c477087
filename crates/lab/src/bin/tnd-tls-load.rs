//! `tnd-tls-load`: the TLS benchmark's handshake client (netns-tests/bench/tls-bench). `--concurrency` connections at
//! a time, each: connect, TLS 1.3 handshake, one `GET` with `Connection: close`, read the answer to its end, close;
//! then the next, until `--duration-ms` has passed. Prints one JSON summary: connections, how many handshakes were
//! full or resumed (as rustls saw them), errors, rate, latency percentiles (connect to end of answer).
//!
//! Why not OpenSSL's tools: `openssl s_time` runs one connection at a time and OpenSSL 3's client spends ~350 us per
//! handshake here, so it, not the proxy, would be the limit. rustls on ring costs the client a fraction of that.
//! `--resume` keeps rustls's ticket cache (each connection resumes with a ticket of an earlier one); without it
//! resumption is disabled and every handshake is full. The server's certificate is pinned (`--pin`): the client
//! accepts exactly that certificate but still verifies the handshake signature made with its key, so the server's
//! proof of possession costs what it costs a real client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rustls::DigitallySignedStruct;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(
    about = "TLS handshake load: a new TLS connection per request, full or resumed handshakes"
)]
struct Args {
    /// address:port of the TLS listener (loopback in the benchmark)
    #[arg(long)]
    target: SocketAddr,
    /// SNI name sent and expected in the certificate
    #[arg(long, default_value = "bench.test")]
    sni: String,
    /// the server's certificate (PEM, the leaf first): the only one accepted
    #[arg(long)]
    pin: PathBuf,
    /// request path
    #[arg(long, default_value = "/b100.html")]
    path: String,
    /// connections in flight at a time
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 10_000)]
    duration_ms: u64,
    /// resume sessions (TLS 1.3 tickets); without it every handshake is full
    #[arg(long)]
    resume: bool,
    /// allow TLS 1.2 too (default: TLS 1.3 only)
    #[arg(long)]
    tls12: bool,
    /// per-connection bound
    #[arg(long, default_value_t = 2_000)]
    timeout_ms: u64,
}

/// Accepts exactly the pinned certificate; the handshake signature is verified for real.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    full: u64,
    resumed: u64,
    errors: u64,
    /// full handshakes that needed a HelloRetryRequest (the server wanted another key exchange group)
    retries: u64,
    groups: std::collections::BTreeMap<String, u64>,
    first_error: Option<String>,
    latency_us: Vec<u32>,
}

/// rustls on ring, as the rest of the project (0.23.48 deprecates it only for its lack of post-quantum key
/// exchange, which a benchmark client can do without).
/// The client offers X25519 alone, as curl and browsers offer it first: with the provider's whole list
/// (X25519, P-256, P-384) OpenSSL 3.0 (HAProxy) picked P-384, ten times dearer on its generic code path.
#[allow(deprecated)]
fn ring_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    Arc::new(provider)
}

fn client_config(args: &Args) -> Result<Arc<rustls::ClientConfig>> {
    let provider = ring_provider();
    let cert = CertificateDer::from_pem_file(&args.pin)
        .with_context(|| format!("reading the pinned certificate {}", args.pin.display()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = if args.tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let verifier = Arc::new(Pinned {
        cert,
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = if args.resume {
        Resumption::store(Arc::new(TicketStore::new(4 * args.concurrency)))
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// The client's session store: rustls's in-memory cache keeps at most 8 TLS 1.3 tickets per server, so with 16
/// handshakes in flight and a server that finishes them in batches, up to half the connections found no ticket and
/// made a full handshake (tandem "resumed" 60-82 % at concurrency 16, 2,812 of 2,813 at concurrency 1). This one keeps
/// up to `capacity` tickets for the one server the tool talks to, and hands out the newest first; the rest (key
/// exchange hint, TLS 1.2 sessions) is rustls's cache.
#[derive(Debug)]
struct TicketStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: std::sync::Mutex<std::collections::VecDeque<rustls::client::Tls13ClientSessionValue>>,
    capacity: usize,
}

impl TicketStore {
    fn new(capacity: usize) -> Self {
        Self {
            inner: rustls::client::ClientSessionMemoryCache::new(16),
            tickets: std::sync::Mutex::new(std::collections::VecDeque::new()),
            capacity: capacity.max(8),
        }
    }

    fn tickets(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::VecDeque<rustls::client::Tls13ClientSessionValue>,
    > {
        self.tickets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl rustls::client::ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        _name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        let mut tickets = self.tickets();
        if tickets.len() >= self.capacity {
            tickets.pop_front();
        }
        tickets.push_back(value);
    }
    fn take_tls13_ticket(
        &self,
        _name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.tickets().pop_back()
    }
}

/// What a handshake was: resumed or full, after a HelloRetryRequest or not, its key exchange group.
struct Shape {
    resumed: bool,
    retry: bool,
    group: Option<String>,
}

/// One connection: handshake, request, whole answer.
async fn one(
    connector: &tokio_rustls::TlsConnector,
    args: &Args,
    name: &ServerName<'static>,
    request: &[u8],
) -> Result<Shape> {
    let tcp = TcpStream::connect(args.target).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let mut tls = connector
        .connect(name.clone(), tcp)
        .await
        .context("handshake")?;
    let session = tls.get_ref().1;
    let shape = Shape {
        resumed: matches!(
            session.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        ),
        retry: matches!(
            session.handshake_kind(),
            Some(rustls::HandshakeKind::FullWithHelloRetryRequest)
        ),
        group: session
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name())),
    };
    tls.write_all(request).await.context("write")?;
    // Read the head, then the body by its Content-Length (as wrk and h2load do), without waiting for the server's
    // close: how fast a proxy closes is not what is measured, its CPU for closing is (the process's CPU time).
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let mut want: Option<usize> = None;
    loop {
        if want.is_some_and(|total| got.len() >= total) {
            break;
        }
        let n = match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !got.is_empty() => break,
            Err(e) => return Err(e).context("read"),
        };
        got.extend_from_slice(&buf[..n]);
        if want.is_none() {
            want = body_end(&got);
        }
        if got.len() > 1 << 20 {
            bail!("answer over 1 MiB");
        }
    }
    if !got.starts_with(b"HTTP/1.1 200") && !got.starts_with(b"HTTP/1.0 200") {
        let head = &got[..got.len().min(40)];
        bail!("answer was not 200: {:?}", String::from_utf8_lossy(head));
    }
    if want.is_some_and(|total| got.len() < total) {
        bail!("answer cut short ({} bytes)", got.len());
    }
    // Our close_notify and FIN, as a client that is done.
    if std::env::var_os("TND_TLS_NO_SHUTDOWN").is_none() {
        let _ = tls.shutdown().await;
    }
    Ok(shape)
}

/// The length of head + body once the head is complete and has a Content-Length.
fn body_end(got: &[u8]) -> Option<usize> {
    let head_len = got.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&got[..head_len]).ok()?;
    let len = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    })?;
    Some(head_len + len)
}

async fn worker(args: Arc<Args>, config: Arc<rustls::ClientConfig>, until: Instant) -> Tally {
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tally = Tally::default();
    let Ok(name) = ServerName::try_from(args.sni.clone()) else {
        tally.errors += 1;
        tally.first_error = Some(format!("bad SNI name {}", args.sni));
        return tally;
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tnd-tls-load\r\nConnection: close\r\n\r\n",
        args.path, args.sni
    );
    let bound = Duration::from_millis(args.timeout_ms);
    while Instant::now() < until {
        let start = Instant::now();
        match tokio::time::timeout(bound, one(&connector, &args, &name, request.as_bytes())).await {
            Ok(Ok(shape)) => {
                tally.ok += 1;
                tally.retries += u64::from(shape.retry);
                *tally
                    .groups
                    .entry(shape.group.unwrap_or_else(|| "none".into()))
                    .or_default() += 1;
                if shape.resumed {
                    tally.resumed += 1;
                } else {
                    tally.full += 1;
                }
                let us = start.elapsed().as_micros();
                tally.latency_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok(Err(e)) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(_) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| "timeout".into());
            }
        }
    }
    tally
}

fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let config = client_config(&args)?;
    // One thread: the client gets one core in the benchmark, like wrk -t1.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let until = started + Duration::from_millis(args.duration_ms);
    let tallies = rt.block_on(async {
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|_| tokio::spawn(worker(args.clone(), config.clone(), until)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = Tally::default();
    for t in tallies {
        let t = t.context("a worker task failed")?;
        all.ok += t.ok;
        all.full += t.full;
        all.resumed += t.resumed;
        all.errors += t.errors;
        all.retries += t.retries;
        for (g, n) in t.groups {
            *all.groups.entry(g).or_default() += n;
        }
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
        all.latency_us.extend(t.latency_us);
    }
    all.latency_us.sort_unstable();
    let pct = |p: usize| -> Option<u32> {
        let n = all.latency_us.len();
        (n > 0).then(|| all.latency_us[(n * p / 100).min(n - 1)])
    };
    let summary = serde_json::json!({
        "tool": "tnd-tls-load",
        "connections": all.ok,
        "full_handshakes": all.full,
        "resumed_handshakes": all.resumed,
        "errors": all.errors,
        "hello_retry_requests": all.retries,
        "key_exchange_groups": all.groups,
        "first_error": all.first_error,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "conn_s": ((all.ok as f64 / elapsed) * 10.0).round() / 10.0,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "concurrency": args.concurrency,
        "resume": args.resume,
    });
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::body_end;

    #[test]
    fn body_end_needs_the_whole_head_and_a_length() {
        assert_eq!(body_end(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"), None);
        let head = b"HTTP/1.1 200 OK\r\ncontent-length:  5 \r\nX: y\r\n\r\n";
        assert_eq!(body_end(head), Some(head.len() + 5));
        assert_eq!(
            body_end(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc"),
            None
        );
        assert_eq!(
            body_end(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            None
        );
    }
}
