//! The native HTTP/1.1 engine's pooled upstream connection: the stream and what was read from it.

use std::task::Context;

use tokio::net::TcpStream;

use super::Reusable;
use crate::buffer::Buf;

/// An upstream connection, pooled between requests.
pub(crate) struct UpConn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: Option<Buf>,
    /// The thread whose reactor has the stream (it was connected there).
    pub(crate) home: u64,
}

impl std::fmt::Debug for UpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpConn")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Reusable for UpConn {
    /// No readiness since the last read (which drained the socket): the server has neither closed nor sent
    /// anything unsolicited. Costs no system call.
    fn usable_now(&mut self) -> bool {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        self.stream.poll_read_ready(&mut cx).is_pending()
    }
    fn worth_keeping(&mut self) -> bool {
        if let Some(b) = self.buf.take() {
            if !b.is_empty() {
                b.give();
                return false;
            }
            b.give();
        }
        self.usable_now()
    }
    fn home(&self) -> u64 {
        self.home
    }
}
