//! Read buffers of the proxy's tokio side: the per-thread pool that the TCP relay tasks and the native HTTP engine
//! borrow 32 KiB buffers from while bytes are in flight (so idle connections hold none), and the short-read rule
//! ([`read_now`]) that saves the `EAGAIN` read after every message; [`Buf`] is a borrowed buffer with a cursor.

use std::cell::RefCell;
use std::io;
use std::io::Read as _;

use tokio::io::Interest;
use tokio::net::TcpStream;

const BUF_SIZE: usize = 32 * 1024;
/// Buffers kept per worker thread for reuse (at most 4 MiB). HTTP mode holds two per request in flight (client and
/// server side); with fewer kept than requests in flight, every request paid for a fresh zeroed 32 KiB buffer
/// (`memset` was 4% of the proxy's CPU at 64 concurrent requests with 16 kept).
const POOL_MAX: usize = 128;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn take_buffer() -> Box<[u8]> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

pub(crate) fn give_buffer(buf: Box<[u8]>) {
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < POOL_MAX {
            b.push(buf);
        }
    });
}

/// Outcome of one non-blocking read.
pub(crate) enum Read {
    Data(usize),
    /// Nothing there right now; tokio's readiness is cleared so the next wait really waits.
    Empty,
    Eof,
}

/// Read what is there without blocking. A short read means the socket is drained: the read then reports
/// `WouldBlock` to tokio's `try_io` so that it clears the readiness *of the event seen before the read* (data that
/// arrives meanwhile raises a new event and is not lost). This saves the `EAGAIN` read that would otherwise follow
/// every message.
pub(crate) fn read_now(from: &TcpStream, buf: &mut [u8]) -> io::Result<Read> {
    let mut short = None;
    let r = from.try_io(Interest::READABLE, || {
        let mut sock: &socket2::Socket = &socket2::SockRef::from(from);
        let n = sock.read(buf)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (r, short) {
        (_, Some(n)) => Ok(Read::Data(n)),
        (Ok(0), None) => Ok(Read::Eof),
        (Ok(n), None) => Ok(Read::Data(n)),
        (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::Empty),
        (Err(e), None) => Err(e),
    }
}

/// A read buffer borrowed from the per-thread pool, with the bytes read and not yet used (the native HTTP engine's).
pub(crate) struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    pub(crate) fn take() -> Self {
        Buf {
            data: take_buffer(),
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn give(self) {
        give_buffer(self.data);
    }

    pub(crate) fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub(crate) fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.data.len()
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads what `from` has now into the free space (moving the content to the front first if needed).
    pub(crate) fn fill(&mut self, from: &TcpStream) -> io::Result<Read> {
        self.fill_with(|space| read_now(from, space))
    }

    /// Lets `read` put bytes into the free space (moving the content to the front first if needed).
    pub(crate) fn fill_with(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> io::Result<Read>,
    ) -> io::Result<Read> {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let r = read(&mut self.data[self.end..])?;
        if let Read::Data(n) = r {
            self.end += n;
        }
        Ok(r)
    }
}
