//! The native engine's client side ([`Client`]): a plain TCP connection, or a TLS one whose handshake is done
//! (rustls' `ServerConnection` driven here without an async wrapper, so that the engine keeps its readiness-based
//! reads and its batched writes: a TLS write is encrypted into one buffer and sent like a plain one).

use std::io::{self, Read as _, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::ServerConnection;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::io::write_two;
use crate::buffer::{Buf, Read};
use crate::shared::lock;

/// One client connection of the native engine.
pub(crate) enum Client {
    Plain(TcpStream),
    Tls(Box<TlsClient>),
}

/// A TLS client connection after its handshake.
pub(crate) struct TlsClient {
    tcp: TcpStream,
    /// Locked only for synchronous work, never across an await.
    session: Mutex<ServerConnection>,
    /// Decrypted bytes wait inside `session` (so a read needs no readiness from the socket).
    pending: AtomicBool,
}

/// Encryption buffers kept per thread for reuse (an idle connection holds none), and the largest kept.
const OUT_POOL_MAX: usize = 64;
const OUT_KEPT_CAPACITY: usize = 64 * 1024;

thread_local! {
    static OUT_POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_out() -> Vec<u8> {
    OUT_POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default()
}

fn give_out(mut out: Vec<u8>) {
    if out.capacity() > OUT_KEPT_CAPACITY {
        return;
    }
    out.clear();
    OUT_POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < OUT_POOL_MAX {
            p.push(out);
        }
    });
}

impl Client {
    /// A TLS connection whose handshake is complete; records it already read are decrypted now.
    pub(crate) fn tls(tcp: TcpStream, mut session: ServerConnection) -> io::Result<Client> {
        // Writes are drained to the socket right after each one: the buffered records never exceed one write.
        session.set_buffer_limit(None);
        let state = session.process_new_packets().map_err(io::Error::other)?;
        let pending = state.plaintext_bytes_to_read() > 0 || state.peer_has_closed();
        Ok(Client::Tls(Box::new(TlsClient {
            tcp,
            session: Mutex::new(session),
            pending: AtomicBool::new(pending),
        })))
    }

    /// The TCP connection underneath (for the reset of a released VIP's connection).
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Client::Plain(tcp) => tcp,
            Client::Tls(c) => &c.tcp,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Client::Tls(_))
    }

    /// Waits until [`Client::fill`] may find something (bytes, EOF, an error).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            Client::Plain(tcp) => tcp.readable().await,
            Client::Tls(c) if c.pending.load(Ordering::Relaxed) => Ok(()),
            Client::Tls(c) => c.tcp.readable().await,
        }
    }

    /// Reads what the client has sent (decrypted) into `buf`'s free space, without waiting.
    pub(crate) fn fill(&self, buf: &mut Buf) -> io::Result<Read> {
        match self {
            Client::Plain(tcp) => buf.fill(tcp),
            Client::Tls(c) => c.fill(buf),
        }
    }

    /// Writes `a` then `b` (encrypted first on TLS).
    pub(crate) async fn write_two(&self, a: &[u8], b: &[u8]) -> io::Result<()> {
        match self {
            Client::Plain(tcp) => write_two(tcp, a, b).await,
            Client::Tls(c) => c.write_two(a, b).await,
        }
    }

    /// Writes `page` if the socket takes it now (a last answer before closing); how many bytes went out.
    pub(crate) fn try_write_last(&self, page: &[u8]) -> Option<usize> {
        match self {
            Client::Plain(tcp) => tcp.try_write(page).ok(),
            Client::Tls(c) => {
                let out = c.encrypt(page, &[], true).ok()?;
                let sent = c.tcp.try_write(&out).ok().map(|_| page.len());
                give_out(out);
                sent
            }
        }
    }

    /// Ends our side: on TLS a `close_notify` first, then FIN.
    pub(crate) async fn close_write(&self) {
        if let Client::Tls(c) = self
            && let Ok(out) = c.encrypt(&[], &[], true)
        {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), write_two(&c.tcp, &out, &[])).await;
            give_out(out);
        }
        let _ = socket2::SockRef::from(self.tcp()).shutdown(std::net::Shutdown::Write);
    }

    /// Reads (and drops) raw bytes while lingering after [`Client::close_write`].
    pub(crate) fn try_discard(&self, scratch: &mut [u8]) -> io::Result<usize> {
        self.tcp().try_read(scratch)
    }
}

/// Hands `a` then `b` to rustls in one call, so that a head and a body that fit one record (16 KiB) leave as one
/// TLS record: the client then reads and decrypts one record per answer, not two (with OpenSSL, two reads each).
fn write_plaintext(session: &mut ServerConnection, a: &[u8], b: &[u8]) -> io::Result<()> {
    if a.is_empty() || b.is_empty() {
        let one = if a.is_empty() { b } else { a };
        return if one.is_empty() {
            Ok(())
        } else {
            session.writer().write_all(one)
        };
    }
    let n = session
        .writer()
        .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])?;
    // With no buffer limit (see `Client::tls`) rustls takes everything; a short count is finished in order.
    let from_a = n.min(a.len());
    let (rest_a, rest_b) = (&a[from_a..], &b[(n - from_a).min(b.len())..]);
    if !rest_a.is_empty() {
        session.writer().write_all(rest_a)?;
    }
    if !rest_b.is_empty() {
        session.writer().write_all(rest_b)?;
    }
    Ok(())
}

/// The socket as rustls reads it, noting how much was asked and how much came.
struct ReadProbe<'a> {
    sock: &'a socket2::Socket,
    asked: usize,
    got: usize,
}

impl io::Read for ReadProbe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.asked = buf.len();
        let mut sock: &socket2::Socket = self.sock;
        let n = sock.read(buf)?;
        self.got = n;
        Ok(n)
    }
}

impl TlsClient {
    fn fill(&self, buf: &mut Buf) -> io::Result<Read> {
        let mut session = lock(&self.session);
        // Set by a short socket read: the socket is drained (its readiness cleared), no read to try again.
        let mut drained = false;
        loop {
            let plain = buf.fill_with(|space| match session.reader().read(space) {
                Ok(0) => Ok(Read::Eof),
                Ok(n) => Ok(Read::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Empty),
                // The peer closed the TCP connection without close_notify: an end like any other here.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Read::Eof),
                Err(e) => Err(e),
            })?;
            match plain {
                Read::Data(_) => {
                    let more = session
                        .process_new_packets()
                        .map(|s| s.plaintext_bytes_to_read() > 0)
                        .unwrap_or(true);
                    self.pending.store(more, Ordering::Relaxed);
                    return Ok(plain);
                }
                Read::Eof => return Ok(Read::Eof),
                Read::Empty => self.pending.store(false, Ordering::Relaxed),
            }
            if drained {
                return Ok(Read::Empty);
            }
            // The short-read rule of `buffer::read_now`: a read that does not fill what rustls offered means the
            // socket is drained; reporting `WouldBlock` to `try_io` clears tokio's readiness without the `EAGAIN`
            // read that would otherwise follow every message.
            let got = self.tcp.try_io(Interest::READABLE, || {
                let mut probe = ReadProbe {
                    sock: &socket2::SockRef::from(&self.tcp),
                    asked: 0,
                    got: 0,
                };
                let n = session.read_tls(&mut probe)?;
                if n > 0 && probe.got < probe.asked {
                    drained = true;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match got {
                Ok(0) => return Ok(Read::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Read::Empty),
                Err(e) => return Err(e),
            }
            if let Err(e) = session.process_new_packets() {
                // Tell the client why (the alert is queued), then fail.
                let mut out = Vec::new();
                let _ = session.write_tls(&mut out);
                let _ = self.tcp.try_write(&out);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// `a` and `b` (and `close_notify` with `close`) as TLS records, plus whatever else rustls has queued.
    fn encrypt(&self, a: &[u8], b: &[u8], close: bool) -> io::Result<Vec<u8>> {
        let mut out = take_out();
        let mut session = lock(&self.session);
        write_plaintext(&mut session, a, b)?;
        if close {
            session.send_close_notify();
        }
        while session.wants_write() {
            session.write_tls(&mut out)?;
        }
        Ok(out)
    }

    async fn write_two(&self, a: &[u8], b: &[u8]) -> io::Result<()> {
        let out = self.encrypt(a, b, false)?;
        let r = write_two(&self.tcp, &out, &[]).await;
        give_out(out);
        r
    }
}
