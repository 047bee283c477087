//! Writes and waits on the native engine's sockets.

use std::io::{self, IoSlice};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::batch;

/// Writes `a` then `b`: small writes through this thread's ring when it has one (see [`batch`]), else in one
/// `writev` when the socket takes both.
pub(super) async fn write_two(to: &TcpStream, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    let total = a.len() + b.len();
    if total > 0
        && total <= batch::MAX_BATCHED
        && let Some(send) = batch::send(std::os::fd::AsRawFd::as_raw_fd(to), a, b)
    {
        // `to` outlives `send`: the borrow of this function keeps the descriptor open.
        let res = send.await;
        // A kernel that does not retry the send itself reports `EAGAIN`: the loop below waits for room instead.
        let sent = if res == -libc::EAGAIN || res == -libc::EINTR {
            0
        } else if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        } else {
            // Short when an error cut the send short (the loop below reports it) or the kernel did not retry.
            usize::try_from(res).unwrap_or(0).min(total)
        };
        if sent == total {
            return Ok(());
        }
        let from_a = sent.min(a.len());
        a = &a[from_a..];
        b = &b[sent - from_a..];
    }
    while !a.is_empty() || !b.is_empty() {
        let r = if a.is_empty() {
            to.try_write(b)
        } else if b.is_empty() {
            to.try_write(a)
        } else {
            to.try_write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let from_a = n.min(a.len());
                a = &a[from_a..];
                b = &b[n - from_a..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until `stream` is readable, unless the server is halted with close (then an error).
pub(super) async fn readable(stream: &TcpStream, kill: &CancellationToken) -> io::Result<()> {
    tokio::select! {
        biased;
        r = stream.readable() => r,
        _ = kill.cancelled() => Err(io::Error::other("server halted")),
    }
}
