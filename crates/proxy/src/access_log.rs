//! The access log: one line per HTTP request and per TCP connection, in a format close to HAProxy's `httplog` and
//! `tcplog` (see `docs/configuration.md`, "Access log").
//!
//! Connection tasks format their line and hand it to [`AccessLog::send`], which never waits: the line goes into a
//! bounded queue (`try_send`), and when the queue is full it is dropped and counted on the service
//! (`tandem_access_log_dropped_total`). One thread of its own writes the queue to the file (or stderr), flushing
//! when the queue runs empty. The file is reopened on [`AccessLog::reopen`] (SIGHUP) and, without a signal, when
//! the path no longer names the file open (moved away by logrotate), checked at most once a second.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tandem_config::AccessLogPath;

use crate::metrics::ServiceMetrics;

/// The node's access log; cheap to clone, every clone feeds the same writer thread.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<String>,
    /// Services not logged.
    skip: Vec<String>,
    reopen: Arc<AtomicBool>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("skip", &self.inner.skip)
            .finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Opens the target (an error here is a start-up error) and starts the writer thread. `queue`: lines held while
    /// the writer is behind (at least 1); `skip`: service labels not logged.
    pub fn start(target: AccessLogPath, queue: usize, skip: Vec<String>) -> io::Result<Self> {
        let out = Output::open(&target)?;
        let (tx, rx) = sync_channel(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("tandem-access-log".into())
            .spawn(move || write_lines(rx, out, target, &flag))?;
        Ok(AccessLog {
            inner: Arc::new(Inner { tx, skip, reopen }),
        })
    }

    /// An access log writing to `writer` (tests: a writer that blocks, or a buffer).
    #[doc(hidden)]
    pub fn with_writer(
        writer: Box<dyn Write + Send>,
        queue: usize,
        skip: Vec<String>,
    ) -> io::Result<Self> {
        let (tx, rx) = sync_channel(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        let out = Output {
            writer: io::BufWriter::new(writer),
            identity: None,
        };
        std::thread::Builder::new()
            .name("tandem-access-log".into())
            .spawn(move || write_lines(rx, out, AccessLogPath::Stderr, &flag))?;
        Ok(AccessLog {
            inner: Arc::new(Inner { tx, skip, reopen }),
        })
    }

    /// Whether connections of `service` are logged.
    pub fn wants(&self, service: &str) -> bool {
        !self.inner.skip.iter().any(|s| s == service)
    }

    /// Queues one line (without its newline), never waiting: a full queue drops it, counted on `metrics`.
    pub fn send(&self, line: String, metrics: &ServiceMetrics) {
        match self.inner.tx.try_send(line) {
            Ok(()) => metrics.access_log_lines.fetch_add(1, Ordering::Relaxed),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics.access_log_dropped.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// Reopen the file before the next line (after logrotate moved it; SIGHUP).
    pub fn reopen(&self) {
        self.inner.reopen.store(true, Ordering::Relaxed);
    }
}

struct Output {
    writer: io::BufWriter<Box<dyn Write + Send>>,
    /// (device, inode) of the open file, to notice it was moved away.
    identity: Option<(u64, u64)>,
}

impl Output {
    fn open(target: &AccessLogPath) -> io::Result<Output> {
        match target {
            AccessLogPath::Stderr => Ok(Output {
                writer: io::BufWriter::new(Box::new(io::stderr())),
                identity: None,
            }),
            AccessLogPath::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                use std::os::unix::fs::MetadataExt;
                let meta = file.metadata()?;
                Ok(Output {
                    writer: io::BufWriter::with_capacity(64 * 1024, Box::new(file)),
                    identity: Some((meta.dev(), meta.ino())),
                })
            }
        }
    }

    /// The path names another file (or none) than the one open.
    fn moved(&self, target: &AccessLogPath) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (target, self.identity) {
            (AccessLogPath::File(path), Some(id)) => match std::fs::metadata(path) {
                Ok(meta) => (meta.dev(), meta.ino()) != id,
                Err(_) => true,
            },
            _ => false,
        }
    }
}

/// The writer thread: until every sender is gone.
fn write_lines(rx: Receiver<String>, mut out: Output, target: AccessLogPath, reopen: &AtomicBool) {
    let mut last_look = Instant::now();
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut line = Some(first);
        while let Some(l) = line.take() {
            let r = out
                .writer
                .write_all(l.as_bytes())
                .and_then(|()| out.writer.write_all(b"\n"));
            if let Err(e) = r {
                if !failing {
                    tracing::error!(error = %e, "access log: cannot write; lines are lost until it works again");
                }
                failing = true;
            } else {
                failing = false;
            }
            line = rx.try_recv().ok();
        }
        let _ = out.writer.flush();
        let look = last_look.elapsed() >= Duration::from_secs(1);
        if reopen.swap(false, Ordering::Relaxed) || (look && out.moved(&target)) {
            match Output::open(&target) {
                Ok(fresh) => out = fresh,
                Err(e) => tracing::error!(error = %e, "access log: cannot reopen"),
            }
        }
        if look {
            last_look = Instant::now();
        }
    }
}

/// The date as HAProxy writes it: `06/Dec/2026:16:05:57.123` (UTC).
pub fn log_date(t: SystemTime) -> String {
    let mut s = String::with_capacity(24);
    push_log_date(&mut s, t);
    s
}

/// Appends [`log_date`]'s text. The part down to the second is formatted once per second per thread (most lines of
/// a busy service share it), the milliseconds every time.
fn push_log_date(s: &mut String, t: SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let (y, m, day) = tandem_types::civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            cached.1.clear();
            let _ = write!(
                cached.1,
                "{day:02}/{}/{y:04}:{:02}:{:02}:{:02}.",
                MONTHS[(m - 1) as usize],
                rem / 3600,
                rem / 60 % 60,
                rem % 60,
            );
            cached.0 = secs;
        }
        s.push_str(&cached.1);
    });
    let ms = d.subsec_millis();
    for digit in [ms / 100, ms / 10 % 10, ms % 10] {
        s.push(char::from(b'0' + digit as u8));
    }
}

/// Milliseconds for a timing field; `-1` when the step did not happen (as HAProxy).
pub(crate) fn ms(d: Option<Duration>) -> i64 {
    d.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One HTTP request's line.
pub(crate) struct HttpLine<'a> {
    pub client: SocketAddr,
    pub accepted: SystemTime,
    pub frontend: SocketAddr,
    pub service: &'a str,
    /// `None`: no server took the request (`<NOSRV>`).
    pub server: Option<&'a str>,
    pub connect: Option<Duration>,
    pub response: Option<Duration>,
    pub total: Duration,
    pub status: u16,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub request: &'a [u8],
}

impl HttpLine<'_> {
    /// `CLIENT:PORT [DATE] VIP:PORT SERVICE/SERVER Tc/Tr/Ta STATUS BYTES_OUT BYTES_IN "REQUEST LINE"`
    pub(crate) fn format(&self) -> String {
        let mut s = String::with_capacity(160 + self.request.len());
        let _ = write!(s, "{} [", self.client);
        push_log_date(&mut s, self.accepted);
        let _ = write!(
            s,
            "] {} {}/{} {}/{}/{} {} {} {} \"",
            self.frontend,
            self.service,
            self.server.unwrap_or("<NOSRV>"),
            ms(self.connect),
            ms(self.response),
            ms(Some(self.total)),
            // 0: no answer was sent (the client went away first), logged as HAProxy does.
            if self.status == 0 {
                -1
            } else {
                i32::from(self.status)
            },
            self.bytes_out,
            self.bytes_in,
        );
        escape_into(&mut s, self.request);
        s.push('"');
        s
    }
}

/// How a TCP connection ended, as the last field of its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpEnd {
    /// Both sides closed: `--`.
    Closed,
    /// No server could be reached: `SC`.
    NoServer,
    /// Idle timeout: `-D`.
    Idle,
    /// Closed by a halt with close or by shutdown: `-K`.
    Killed,
    /// A socket error: `-E`.
    Error,
}

impl TcpEnd {
    fn code(self) -> &'static str {
        match self {
            TcpEnd::Closed => "--",
            TcpEnd::NoServer => "SC",
            TcpEnd::Idle => "-D",
            TcpEnd::Killed => "-K",
            TcpEnd::Error => "-E",
        }
    }
}

/// One TCP connection's line.
pub(crate) struct TcpLine<'a> {
    pub client: SocketAddr,
    pub accepted: SystemTime,
    pub frontend: SocketAddr,
    pub service: &'a str,
    pub server: Option<&'a str>,
    pub connect: Option<Duration>,
    pub total: Duration,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub end: TcpEnd,
}

impl TcpLine<'_> {
    /// `CLIENT:PORT [DATE] VIP:PORT SERVICE/SERVER Tc/Tt BYTES_OUT BYTES_IN END`
    pub(crate) fn format(&self) -> String {
        let mut s = String::with_capacity(128);
        let _ = write!(s, "{} [", self.client);
        push_log_date(&mut s, self.accepted);
        let _ = write!(
            s,
            "] {} {}/{} {}/{} {} {} {}",
            self.frontend,
            self.service,
            self.server.unwrap_or("<NOSRV>"),
            ms(self.connect),
            ms(Some(self.total)),
            self.bytes_out,
            self.bytes_in,
            self.end.code()
        );
        s
    }
}

/// The request line as it came, at most 1 KiB, with `"`, `\`, `#` and bytes outside printable ASCII written as
/// `#XX` (HAProxy's encoding), so a line can never be split or forged by a client.
fn escape_into(s: &mut String, raw: &[u8]) {
    const MAX: usize = 1024;
    for &b in raw.iter().take(MAX) {
        if (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\\' | b'#') {
            s.push(b as char);
        } else {
            let _ = write!(s, "#{b:02X}");
        }
    }
    if raw.len() > MAX {
        s.push_str("...");
    }
}

/// The request line of a head (`GET /x HTTP/1.1`), without its line end.
pub(crate) fn request_line(head: &[u8]) -> &[u8] {
    let end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = &head[..end];
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn dates_as_haproxy_writes_them() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_573_157_123);
        assert_eq!(log_date(t), "06/Dec/2026:16:05:57.123");
        assert_eq!(log_date(UNIX_EPOCH), "01/Jan/1970:00:00:00.000");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(log_date(t), "29/Feb/2000:00:00:00.000");
    }

    #[test]
    fn the_cached_second_follows_the_clock() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_573_157_999);
        assert_eq!(log_date(t), "06/Dec/2026:16:05:57.999");
        assert_eq!(
            log_date(t + Duration::from_millis(1)),
            "06/Dec/2026:16:05:58.000"
        );
        assert_eq!(log_date(t), "06/Dec/2026:16:05:57.999");
        assert_eq!(
            log_date(t + Duration::from_millis(86_400_000)),
            "07/Dec/2026:16:05:57.999"
        );
    }

    #[test]
    fn http_line_format() {
        let line = HttpLine {
            client: "192.0.2.7:51234".parse().unwrap(),
            accepted: UNIX_EPOCH + Duration::from_millis(1_796_573_157_123),
            frontend: "10.0.0.10:80".parse().unwrap(),
            service: "web",
            server: Some("app1"),
            connect: None,
            response: Some(Duration::from_millis(12)),
            total: Duration::from_millis(15),
            status: 200,
            bytes_out: 1234,
            bytes_in: 78,
            request: b"GET /a\"b#\x01 HTTP/1.1",
        }
        .format();
        assert_eq!(
            line,
            "192.0.2.7:51234 [06/Dec/2026:16:05:57.123] 10.0.0.10:80 web/app1 -1/12/15 200 1234 78 \
             \"GET /a#22b#23#01 HTTP/1.1\""
        );
        let unanswered = HttpLine {
            client: "192.0.2.7:51234".parse().unwrap(),
            accepted: UNIX_EPOCH,
            frontend: "10.0.0.10:80".parse().unwrap(),
            service: "web",
            server: Some("app1"),
            connect: Some(Duration::from_millis(1)),
            response: None,
            total: Duration::from_millis(7),
            status: 0,
            bytes_out: 0,
            bytes_in: 40,
            request: b"GET / HTTP/1.1",
        }
        .format();
        assert!(
            unanswered.contains(" web/app1 1/-1/7 -1 0 40 "),
            "{unanswered}"
        );
    }

    #[test]
    fn tcp_line_format() {
        let line = TcpLine {
            client: "[2001:db8::7]:4000".parse().unwrap(),
            accepted: UNIX_EPOCH,
            frontend: "10.0.0.10:3306".parse().unwrap(),
            service: "mysql",
            server: None,
            connect: None,
            total: Duration::from_millis(3),
            bytes_out: 0,
            bytes_in: 0,
            end: TcpEnd::NoServer,
        }
        .format();
        assert_eq!(
            line,
            "[2001:db8::7]:4000 [01/Jan/1970:00:00:00.000] 10.0.0.10:3306 mysql/<NOSRV> -1/3 0 0 SC"
        );
    }

    #[test]
    fn request_line_of_a_head() {
        assert_eq!(
            request_line(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"GET / HTTP/1.1"
        );
        assert_eq!(
            request_line(b"GET / HTTP/1.1\nHost: x\n\n"),
            b"GET / HTTP/1.1"
        );
    }

    /// A writer that blocks until released, standing for a disk that stopped.
    struct Stuck(Arc<(Mutex<bool>, std::sync::Condvar)>, Arc<Mutex<Vec<u8>>>);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.0;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let log = AccessLog::with_writer(
            Box::new(Stuck(gate.clone(), written.clone())),
            4,
            Vec::new(),
        )
        .unwrap();
        let metrics = ServiceMetrics::default();
        let started = Instant::now();
        // Lines longer than the writer's buffer, so that its first write reaches the stuck disk at once.
        let pad = "x".repeat(9000);
        for i in 0..1000 {
            log.send(format!("line {i} {pad}"), &metrics);
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "send waited for the writer"
        );
        let queued = metrics.access_log_lines.load(Ordering::Relaxed);
        let dropped = metrics.access_log_dropped.load(Ordering::Relaxed);
        assert_eq!(queued + dropped, 1000);
        // The queue (4) and the line the writer holds in its stuck write.
        assert!((4..=5).contains(&queued), "queued {queued}");
        // Released, the writer writes what was queued, in order.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
            if text.lines().count() as u64 == queued {
                assert!(text.starts_with("line 0 x"));
                break;
            }
            assert!(Instant::now() < deadline, "writer did not finish");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_file_moved_away_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log =
            AccessLog::start(AccessLogPath::File(path.clone()), 16, vec!["quiet".into()]).unwrap();
        assert!(!log.wants("quiet") && log.wants("web"));
        let metrics = ServiceMetrics::default();
        log.send("first".into(), &metrics);
        let wait_for = |p: &std::path::Path, want: &str| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if std::fs::read_to_string(p).unwrap_or_default() == want {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never held {want:?}",
                    p.display()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(&path, "first\n");
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.send("second".into(), &metrics);
        // The line that notices the reopen request still goes to the old file; the next ones to the new one.
        log.send("third".into(), &metrics);
        std::thread::sleep(Duration::from_millis(50));
        log.send("fourth".into(), &metrics);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let old = std::fs::read_to_string(&rotated).unwrap_or_default();
            let new = std::fs::read_to_string(&path).unwrap_or_default();
            if old.lines().count() + new.lines().count() == 4 && new.contains("fourth") {
                assert!(old.starts_with("first\n"));
                break;
            }
            assert!(Instant::now() < deadline, "old {old:?} new {new:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
