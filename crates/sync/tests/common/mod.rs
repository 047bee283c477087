//! Helpers of the integration tests: two sync drivers on 127.0.0.0/8, a recording relay that
//! can cut the connection, a config sink that records offers.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_stick::{Clock, StickKey, StickTables, TableSpec};
use tandem_sync::session::SessionTimers;
use tandem_sync::{
    ConfigFile, ConfigRole, ConfigSink, ConfigVersion, Identity, LocalConfig, Secret, SharedTables,
    SyncHandle, SyncParams, SyncSettings, SyncStatus, dials, spawn_sync,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

pub const SECRET: &[u8] = b"s3cr3t-shared-between-lb1-and-lb2";
pub const CLUSTER: &str = "openstack";

pub fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A port free on the given loopback address right now (it may be taken again before it is
/// bound: use [`start_accepting`], which retries).
async fn free_port(on: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(on, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A listener on `ip` at a port the kernel picks, so it is free on that very address and held
/// from now on (a port checked free on another address may be in use here by a test's outgoing
/// connection).
pub async fn listen_any_port(ip: IpAddr) -> TcpListener {
    TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap()
}

pub fn identity(secret: &[u8]) -> Identity {
    Identity::new(CLUSTER, Secret::new(secret.to_vec()).unwrap())
}

pub fn settings() -> SyncSettings {
    SyncSettings {
        timers: SessionTimers {
            keepalive_ms: 200,
            peer_timeout_ms: 1_500,
        },
        handshake_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        ..SyncSettings::default()
    }
}

pub fn specs() -> Vec<(String, TableSpec)> {
    vec![
        (
            "nova_novncproxy".to_string(),
            TableSpec::from_config(300, 2_000_000),
        ),
        ("mysql".to_string(), TableSpec::from_config(0, 1_000)),
    ]
}

pub fn tables() -> SharedTables {
    let mut t = StickTables::new();
    t.reconcile(specs(), 0);
    Arc::new(Mutex::new(t))
}

pub fn client(i: u32) -> StickKey {
    StickKey::SourceIp(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
}

pub const SERVERS: [&str; 3] = [
    "Overcloud-controller-1",
    "Overcloud-controller-2",
    "Overcloud-controller-3",
];

pub fn config(generation: u64, text: &str) -> LocalConfig {
    LocalConfig {
        bytes: text.as_bytes().to_vec(),
        files: Vec::new(),
        version: ConfigVersion {
            generation,
            digest: format!("{:064x}", generation * 7919),
        },
    }
}

/// One offer: bytes, generation, digest.
pub type Offer = (Vec<u8>, u64, String);

/// Records every offer; refuses files containing `INVALID`.
#[derive(Clone, Default)]
pub struct RecordingSink {
    pub offers: Arc<Mutex<Vec<Offer>>>,
    /// The files of each offer, in the same order.
    pub files: Arc<Mutex<Vec<Vec<ConfigFile>>>>,
}

impl ConfigSink for RecordingSink {
    fn offer(
        &mut self,
        bytes: &[u8],
        files: &[ConfigFile],
        generation: u64,
        digest: &str,
    ) -> Result<(), String> {
        self.files.lock().unwrap().push(files.to_vec());
        self.offers
            .lock()
            .unwrap()
            .push((bytes.to_vec(), generation, digest.to_string()));
        if String::from_utf8_lossy(bytes).contains("INVALID") {
            return Err("cluster.toml:3:1: unknown field `INVALID`".into());
        }
        Ok(())
    }
}

pub struct Node {
    pub handle: SyncHandle,
    pub tables: SharedTables,
    pub clock: Clock,
    pub sink: RecordingSink,
}

impl Node {
    pub fn status(&self) -> SyncStatus {
        self.handle.status().borrow().clone()
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ms()
    }
}

pub struct NodeSpec {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub secret: Vec<u8>,
    pub role: ConfigRole,
    pub config: Option<LocalConfig>,
    pub active: bool,
    pub tables: SharedTables,
    pub settings: SyncSettings,
}

pub async fn start(spec: NodeSpec) -> Node {
    try_start(spec).await.unwrap()
}

async fn try_start(spec: NodeSpec) -> std::io::Result<Node> {
    let id = identity(&spec.secret);
    try_start_as(spec, id).await
}

/// Starts a node of `spec` that presents `identity` (e.g. another release's protocol versions).
pub async fn try_start_as(spec: NodeSpec, identity: Identity) -> std::io::Result<Node> {
    let clock = Clock::new();
    let sink = RecordingSink::default();
    let params = SyncParams {
        local: spec.local,
        peer: spec.peer,
        identity,
        role: spec.role,
        settings: spec.settings,
    };
    let handle = spawn_sync(
        params,
        spec.tables.clone(),
        clock,
        Box::new(sink.clone()),
        spec.config,
        spec.active,
    )
    .await?;
    Ok(Node {
        handle,
        tables: spec.tables,
        clock,
        sink,
    })
}

/// Starts a node that dials (checked here, so the tests notice if that changes). It dials from
/// port 0 of its address; its own `local` port only gets the presence listener that answers
/// probes, best effort (a port in use there is logged, not an error), so that port needs not be
/// free.
pub async fn start_dialing(spec: NodeSpec) -> Node {
    assert!(
        dials(spec.local, spec.peer),
        "{} should dial {}",
        spec.local,
        spec.peer
    );
    start(spec).await
}

/// How many ports [`start_accepting`] tries before giving up.
const BIND_ATTEMPTS: usize = 20;

/// Starts a node that accepts on `ip` at a port free there, and returns it with its listening
/// address. `spec(port)` must put the node's `local` on `ip:port`. The port is checked free and
/// then bound by the driver; if something took it in between, another port is tried.
pub async fn start_accepting(ip: IpAddr, spec: impl FnMut(u16) -> NodeSpec) -> (Node, SocketAddr) {
    start_accepting_as(ip, None, spec).await
}

/// [`start_accepting`], presenting `identity` if given (else the one of the spec's secret).
pub async fn start_accepting_as(
    ip: IpAddr,
    identity_override: Option<Identity>,
    mut spec: impl FnMut(u16) -> NodeSpec,
) -> (Node, SocketAddr) {
    for _ in 0..BIND_ATTEMPTS {
        let port = free_port(ip).await;
        let spec = spec(port);
        let local = SocketAddr::new(ip, port);
        assert_eq!(spec.local, local, "the spec must listen on the port given");
        assert!(
            !dials(spec.local, spec.peer),
            "{} should accept from {}",
            spec.local,
            spec.peer
        );
        let started = match identity_override.clone() {
            Some(id) => try_start_as(spec, id).await,
            None => try_start(spec).await,
        };
        match started {
            Ok(node) => return (node, local),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("starting the accepting node on {local}: {e}"),
        }
    }
    panic!("no port on {ip} stayed free long enough in {BIND_ATTEMPTS} attempts");
}

/// Polls `check` every 10 ms until true or `timeout` (bounded).
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn same_entries(
    a: &SharedTables,
    b: &SharedTables,
    now_a: u64,
    now_b: u64,
    keys: impl Iterator<Item = StickKey> + Clone,
) -> bool {
    let a = a.lock().unwrap();
    let b = b.lock().unwrap();
    for (label, ta) in a.iter() {
        let Some(tb) = b.get(label) else { return false };
        if ta.len() != tb.len() {
            return false;
        }
        for key in keys.clone() {
            let ea = ta.peek(&key, now_a).map(|e| e.server);
            let eb = tb.peek(&key, now_b).map(|e| e.server);
            if ea != eb {
                return false;
            }
        }
    }
    true
}

/// A TCP relay between the dialer and the acceptor that records both directions and can cut
/// every connection. Accepts on `listener`, connects to `target` from the listener's address.
pub struct Relay {
    pub to_acceptor: Arc<Mutex<Vec<u8>>>,
    pub to_dialer: Arc<Mutex<Vec<u8>>>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub fn start(listener: TcpListener, target: SocketAddr) -> Relay {
        let source = listener.local_addr().unwrap().ip();
        let to_acceptor = Arc::new(Mutex::new(Vec::new()));
        let to_dialer = Arc::new(Mutex::new(Vec::new()));
        let (cut, cut_rx) = watch::channel(0u64);
        let (ta, td) = (to_acceptor.clone(), to_dialer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(source, 0)).unwrap();
                let Ok(outbound) = socket.connect(target).await else {
                    continue;
                };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let mut cut1 = cut_rx.clone();
                let mut cut2 = cut_rx.clone();
                cut1.borrow_and_update();
                cut2.borrow_and_update();
                let ta = ta.clone();
                let td = td.clone();
                tokio::spawn(async move {
                    tokio::select! { _ = pump(ir, ow, ta) => {}, _ = cut1.changed() => {} }
                });
                tokio::spawn(async move {
                    tokio::select! { _ = pump(or, iw, td) => {}, _ = cut2.changed() => {} }
                });
            }
        });
        Relay {
            to_acceptor,
            to_dialer,
            cut,
            task,
        }
    }

    /// Cuts every current connection (new ones still pass).
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    record: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        record.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A raw TCP client bound to `source`, for feeding bytes to an acceptor.
pub async fn raw_connect(source: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(to).await.unwrap()
}
