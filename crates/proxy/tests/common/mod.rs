//! Shared helpers for the proxy integration tests: config builders and tiny in-process backends.
//! Every address is on 127.0.0.0/8.
#![allow(dead_code, clippy::unwrap_used)]

pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tandem_config::model::*;
use tandem_proxy::{Proxy, ProxyStatus, SharedStickTables};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

pub fn health(interval_ms: u64, rise: u32, fall: u32) -> HealthCheckConfig {
    HealthCheckConfig {
        interval_ms,
        rise,
        fall,
        timeout_ms: interval_ms * 8 / 10,
        check: CheckKind::Connect,
    }
}

pub fn proxy_defaults() -> ProxyDefaults {
    ProxyDefaults {
        connect_timeout_ms: 1000,
        client_timeout_ms: 30_000,
        server_timeout_ms: 30_000,
        max_connections: 0,
    }
}

pub fn server(label: &str, addr: SocketAddr, weight: u32) -> Server {
    Server {
        label: label.into(),
        address: addr.ip(),
        port: Some(addr.port()),
        weight,
    }
}

pub fn service(label: &str, vip: SocketAddr, mode: Mode, servers: Vec<Server>) -> Service {
    Service {
        label: label.into(),
        vip: vip.ip(),
        ports: vec![vip.port()],
        mode,
        balance: Balance::WeightedLeastConnections,
        persistence: Persistence {
            mode: PersistenceMode::None,
            timeout_s: 0,
            table_size: 1000,
            cookie_name: "SERVERID".into(),
        },
        health_check: health(50, 1, 2),
        proxy: proxy_defaults(),
        fallback: None,
        servers,
        tls: None,
    }
}

pub fn persistence(mode: PersistenceMode, timeout_s: u64) -> Persistence {
    Persistence {
        mode,
        timeout_s,
        table_size: 1000,
        cookie_name: "SERVERID".into(),
    }
}

pub fn cluster(services: Vec<Service>) -> Arc<ClusterConfig> {
    Arc::new(ClusterConfig {
        cluster: ClusterSection {
            name: "test".into(),
        },
        heartbeat: HeartbeatConfig {
            interval_ms: 200,
            dead_ms: 1000,
            warn_ms: 500,
            init_dead_ms: 3000,
            auto_failback: false,
            ping_nodes: vec![],
            garp_count: 3,
            garp_spacing_ms: 100,
            garp_refresh_ms: 0,
            garp_form: GarpForm::Both,
            conflict_check_ms: 1000,
            handover_drain_ms: 500,
        },
        health_check: health(50, 1, 2),
        proxy: proxy_defaults(),
        fallback: None,
        services,
    })
}

/// The native HTTP engine as the daemon runs it: on two threads of its own, small writes batched through io_uring
/// where it can be set up while a thread's rounds of writes are large (adaptive); in the test's runtime when
/// `TANDEM_TEST_H1=runtime`, on its threads always batching when `TANDEM_TEST_H1=batched`, never batching when it is
/// `direct` (tests/run-all runs the HTTP scenarios several ways).
pub fn native_engine() -> tandem_proxy::H1Engine {
    let batching = match std::env::var("TANDEM_TEST_H1").as_deref() {
        Ok("runtime") => return tandem_proxy::H1Engine::in_runtime(),
        Ok("batched") => tandem_proxy::WriteBatching::Always,
        Ok("direct") => tandem_proxy::WriteBatching::Never,
        _ => tandem_proxy::WriteBatching::Adaptive,
    };
    // Polling before sleeping as the daemon's default says (`[tuning] http_poll_us`).
    let poll = Duration::from_micros(u64::from(tandem_config::model::DEFAULT_HTTP_POLL_US));
    let engine = tandem_proxy::H1Engine::on_threads(2, batching, poll).unwrap();
    if io_uring_available() {
        assert_eq!(
            engine.rings(),
            2,
            "io_uring works here: the engine's threads must use it"
        );
    }
    engine
}

/// Starts a proxy on the native HTTP engine ([`native_engine`]). TCP mode relays as the daemon does, on two io_uring rings; on two
/// poll loops when `TANDEM_TEST_TCP_RELAY=poll`, in the connection tasks when it is `tasks` (tests/run-all runs the
/// TCP scenarios every way).
pub fn start(cfg: Arc<ClusterConfig>) -> Proxy {
    start_logged(cfg, None)
}

/// As [`start`], with an access log.
pub fn start_logged(cfg: Arc<ClusterConfig>, access_log: Option<tandem_proxy::AccessLog>) -> Proxy {
    let stick: SharedStickTables = Default::default();
    let tcp = match std::env::var("TANDEM_TEST_TCP_RELAY").as_deref() {
        Ok("tasks") => tandem_proxy::TcpRelay::Tasks,
        Ok("poll") => tandem_proxy::TcpRelay::Loops(2),
        _ => tandem_proxy::TcpRelay::Uring(2),
    };
    let proxy = Proxy::start_with_options(
        cfg,
        stick,
        tandem_proxy::ProxyOptions {
            clock: tandem_stick::Clock::new(),
            http_engine: Arc::new(native_engine()),
            tcp_relay: tcp,
            relay_yield: true,
            access_log,
            ticket_secret: None,
        },
    )
    .unwrap();
    if tcp == tandem_proxy::TcpRelay::Uring(2) && !io_uring_available() {
        // Then the fallback is what runs, and what these tests check.
        eprintln!(
            "io_uring cannot be set up on this machine: TCP mode is tested on the poll-loop fallback"
        );
        assert_eq!(proxy.tcp_relay(), tandem_proxy::TcpRelay::Loops(2));
    } else {
        // Where io_uring works, falling back would test the wrong relay: say so.
        assert_eq!(
            proxy.tcp_relay(),
            tcp,
            "the TCP relay asked for did not start"
        );
    }
    proxy
}

/// Whether this kernel lets a process set up an io_uring ring as the relay does (deferred task running).
fn io_uring_available() -> bool {
    io_uring::IoUring::<io_uring::squeue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
        .is_ok()
}

/// Starts a proxy with one TCP-mode service `label` on `vip` in front of one server at `backend`, and waits up to
/// `within` for the server to be up.
pub async fn start_tcp_one(
    label: &str,
    vip: SocketAddr,
    backend: SocketAddr,
    within: Duration,
) -> Proxy {
    let proxy = start(cluster(vec![service(
        label,
        vip,
        Mode::Tcp,
        vec![server("a", backend, 1)],
    )]));
    wait_for(&proxy, within, "up", |s| all_up(s, label)).await;
    proxy
}

/// The HTTP engines; HTTP-mode scenarios run on each. Each engine gets its own loopback range (127.X.y.z of the
/// scenario becomes 127.(X+100).y.z for hyper) so that both versions of a scenario can run at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Native,
    Hyper,
}

impl Engine {
    pub fn sa(self, s: &str) -> SocketAddr {
        let a = sa(s);
        match (self, a) {
            (Engine::Native, _) => a,
            (Engine::Hyper, SocketAddr::V4(v4)) => {
                let [x, b, c, d] = v4.ip().octets();
                assert_eq!(x, 127);
                assert!(b < 100, "scenario addresses must stay below 127.100");
                SocketAddr::new(IpAddr::V4([127, b + 100, c, d].into()), v4.port())
            }
            (Engine::Hyper, v6) => v6,
        }
    }

    pub fn start(self, cfg: Arc<ClusterConfig>) -> Proxy {
        let stick: SharedStickTables = Default::default();
        let engine: Arc<dyn tandem_proxy::HttpEngine> = match self {
            Engine::Native => Arc::new(native_engine()),
            Engine::Hyper => Arc::new(tandem_proxy::HyperEngine),
        };
        Proxy::start_with(cfg, stick, tandem_stick::Clock::new(), engine).unwrap()
    }
}

/// Runs each listed `async fn(Engine)` scenario as one test per HTTP engine (modules `native` and `hyper_engine`).
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod native {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Engine::Native).await
                }
            )*
        }
        mod hyper_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Engine::Hyper).await
                }
            )*
        }
    };
}

/// Wait until `pred(status)` holds, or panic after `timeout` with the last status.
pub async fn wait_for(
    proxy: &Proxy,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&ProxyStatus) -> bool,
) {
    let start = Instant::now();
    loop {
        let st = proxy.status();
        if pred(&st) {
            return;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out waiting for {what}: {}",
                serde_json::to_string_pretty(&st).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True when every listed server of `service` is up.
pub fn all_up(st: &ProxyStatus, service: &str) -> bool {
    st.services
        .iter()
        .filter(|s| s.label == service)
        .all(|s| s.servers.iter().all(|r| r.health == "up"))
}

pub fn server_health<'a>(st: &'a ProxyStatus, service: &str, server: &str) -> &'a str {
    let s = st.services.iter().find(|s| s.label == service).unwrap();
    s.servers.iter().find(|r| r.label == server).unwrap().health
}

/// A TCP backend that writes `name\n` on accept, then echoes everything until EOF, then closes.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str, addr: SocketAddr) -> Backend {
        let listener = bind_retry(addr).await;
        let accepted = Arc::new(AtomicU64::new(0));
        let acc = accepted.clone();
        let n = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                acc.fetch_add(1, Ordering::Relaxed);
                let n = n.clone();
                tokio::spawn(async move {
                    let _ = s.set_nodelay(true);
                    if s.write_all(format!("{n}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Backend {
            name: name.into(),
            addr,
            accepted,
            task,
        }
    }

    /// Stop accepting (the port is closed: connects are refused). Established connections keep running.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn bind_retry(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        if sock.bind(addr).is_ok() {
            return sock.listen(4096).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind backend {addr}");
}

/// Connect through the proxy and read the backend's name line.
pub async fn who(vip: SocketAddr) -> std::io::Result<String> {
    who_from(vip, None).await
}

/// As [`who`], binding the client to `source` (to act as distinct client addresses).
pub async fn who_from(vip: SocketAddr, source: Option<IpAddr>) -> std::io::Result<String> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    if let Some(src) = source {
        sock.bind(SocketAddr::new(src, 0))?;
    }
    let mut s = tokio::time::timeout(Duration::from_secs(5), sock.connect(vip)).await??;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before name",
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    Ok(String::from_utf8(line).unwrap())
}

/// Open a connection through the proxy, read the name, and keep the connection.
pub async fn hold(vip: SocketAddr) -> (String, TcpStream) {
    let mut s = TcpStream::connect(vip).await.unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before name");
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    (String::from_utf8(line).unwrap(), s)
}

/// Raise RLIMIT_NOFILE (we run as root in CI; fall back to the hard limit otherwise).
pub fn raise_nofile(want: u64) {
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let target = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(r.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &target) != 0 {
            let soft = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
    }
}

pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// An HTTP/1.1 backend (hyper) answering every request with its name in the body and what it saw in headers:
/// `x-backend`, `x-seen-xff`, `x-seen-via`, `x-seen-foo` (a header the client marks hop-by-hop), `x-seen-conn`,
/// `x-seen-proto` (X-Forwarded-Proto), `x-seen-host`, `x-seen-version` (the request's HTTP version).
/// `/big/N` answers N bytes, `/chunked/N` N bytes with no length (chunked); POST bodies are answered with their
/// length. Counts accepted connections.
pub struct HttpBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
    listener: Arc<TcpListener>,
    dead: tokio_util::sync::CancellationToken,
}

impl HttpBackend {
    pub async fn start(name: &str, addr: SocketAddr) -> HttpBackend {
        use http_body_util::{BodyExt, Full};
        use hyper::body::{Bytes, Incoming};
        use hyper::{Request, Response};
        let listener = Arc::new(bind_retry(addr).await);
        let accepting = listener.clone();
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        let n = name.to_string();
        let dead = tokio_util::sync::CancellationToken::new();
        let dead2 = dead.clone();
        let task = tokio::spawn(async move {
            let _guard = dead2.clone().drop_guard();
            loop {
                let accepted = tokio::select! {
                    biased;
                    _ = dead2.cancelled() => return,
                    a = accepting.accept() => a,
                };
                let Ok((s, _)) = accepted else {
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                let n = n.clone();
                let r = r.clone();
                let dead = dead2.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let n = n.clone();
                        r.fetch_add(1, Ordering::Relaxed);
                        async move {
                            let h = |k: &str| {
                                req.headers()
                                    .get_all(k)
                                    .iter()
                                    .map(|v| v.to_str().unwrap_or("?").to_string())
                                    .collect::<Vec<_>>()
                                    .join("|")
                            };
                            let (xff, via, hop, conn) =
                                (h("x-forwarded-for"), h("via"), h("x-foo"), h("connection"));
                            let (proto, host) = (h("x-forwarded-proto"), h("host"));
                            let path = req.uri().path().to_string();
                            let req_version = req.version();
                            if let Some(size) = path.strip_prefix("/chunked/") {
                                // Unknown length: hyper sends it chunked, in 1000-byte chunks.
                                let size: usize = size.parse().unwrap();
                                let frames = (0..size.div_ceil(1000)).map(move |i| {
                                    let n = (size - i * 1000).min(1000);
                                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                        Bytes::from(vec![b'c'; n]),
                                    ))
                                });
                                let body =
                                    http_body_util::StreamBody::new(futures::stream::iter(frames));
                                let resp = Response::builder()
                                    .header("x-backend", n.as_str())
                                    .body(http_body_util::Either::Right(body))
                                    .unwrap();
                                return Ok::<_, std::convert::Infallible>(resp);
                            }
                            let body = if let Some(size) = path.strip_prefix("/big/") {
                                Bytes::from(vec![b'x'; size.parse::<usize>().unwrap()])
                            } else if req.method() == hyper::Method::POST {
                                let b = req.into_body().collect().await.unwrap().to_bytes();
                                Bytes::from(format!("{n} {}", b.len()))
                            } else {
                                Bytes::from(n.clone())
                            };
                            let resp = Response::builder()
                                .header("x-backend", n.as_str())
                                .header("x-seen-xff", xff)
                                .header("x-seen-via", via)
                                .header("x-seen-foo", hop)
                                .header("x-seen-conn", conn)
                                .header("x-seen-proto", proto)
                                .header("x-seen-host", host)
                                .header("x-seen-version", format!("{:?}", req_version))
                                .body(http_body_util::Either::Left(Full::new(body)))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc);
                    // Once killed, never another answer (even to a request already on its way).
                    tokio::select! {
                        biased;
                        _ = dead.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        HttpBackend {
            name: name.into(),
            addr,
            connections,
            requests,
            task,
            listener,
            dead,
        }
    }

    /// Like a crashed process: stop listening and close every connection. Takes effect before it returns (new
    /// connections are refused, open ones answer nothing more), not whenever the runtime gets to the aborted tasks.
    pub fn kill(&self) {
        self.dead.cancel();
        let _ = socket2::SockRef::from(&*self.listener).shutdown(std::net::Shutdown::Both);
        self.task.abort();
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A keep-alive HTTP/1.1 client connection (hyper) to `addr`.
pub struct HttpClient {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl HttpClient {
    pub async fn connect(addr: SocketAddr) -> HttpClient {
        let s = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        HttpClient { sender }
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", path, headers, Vec::new()).await
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        use http_body_util::BodyExt;
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "test");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .unwrap();
        self.sender.ready().await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// Fail (not skip) when a required external tool is missing.
pub fn require_binary(name: &str) -> std::path::PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"] {
        let p = std::path::Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "required binary `{name}` is not installed (apt-get install redis-server redis-tools curl)"
    );
}

/// A backend that accepts connections and never answers (keeps them open until aborted).
pub async fn mute_backend(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = bind_retry(addr).await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    })
}

/// What a [`WatchedBackend`] saw of one of its connections (numbered in accept order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The connection's first bytes arrived.
    Data(u64),
    /// The proxy closed (or reset) a connection that had sent bytes.
    Closed(u64),
}

/// A backend that tells what happens to its connections: when one first sends bytes and when the proxy closes it.
/// Connections that never send anything (connect health checks) are not reported. With `echo`, it sends back what
/// it reads (TCP mode); without, it reads and never answers (an HTTP request left waiting).
pub struct WatchedBackend {
    pub addr: SocketAddr,
    pub seen: tokio::sync::mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl WatchedBackend {
    pub async fn start(addr: SocketAddr, echo: bool) -> WatchedBackend {
        let listener = bind_retry(addr).await;
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            for id in 0.. {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut got = false;
                    loop {
                        match s.read(&mut buf).await {
                            Ok(n) if n > 0 => {
                                if !got {
                                    got = true;
                                    let _ = tx.send(Seen::Data(id));
                                }
                                if echo && s.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            _ => break,
                        }
                    }
                    if got {
                        let _ = tx.send(Seen::Closed(id));
                    }
                });
            }
        });
        WatchedBackend { addr, seen, task }
    }

    /// The next event, within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Seen> {
        tokio::time::timeout(within, self.seen.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for WatchedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits up to `within` for `stream` to end; true when it was reset (ECONNRESET), as a client of a released VIP
/// must see. Panics when it neither ends nor resets in time.
pub async fn was_reset(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection neither ended nor was reset within {within:?}"),
            Ok(Ok(0)) => return false,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}
