//! Where a body being relayed stands ([`Body`]), and how an exchange or a body relay ended.

use super::chunked::{ChunkError, ChunkedScanner};
use super::head::Framing;

/// Where a body being relayed stands.
#[derive(Clone)]
pub(super) struct Body {
    pub(super) framing: Framing,
    pub(super) remaining: u64,
    pub(super) chunks: ChunkedScanner,
    pub(super) done: bool,
}

impl Body {
    pub(super) fn new(framing: Framing) -> Self {
        Body {
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunks: ChunkedScanner::new(),
            done: framing == Framing::Empty,
        }
    }

    /// How many of `data` (the next bytes of the stream) belong to the body.
    pub(super) fn take(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        if self.done {
            return Ok(0);
        }
        match self.framing {
            Framing::Empty => Ok(0),
            Framing::Length(_) => {
                let n = (data.len() as u64).min(self.remaining);
                self.remaining -= n;
                self.done = self.remaining == 0;
                Ok(n as usize)
            }
            Framing::Chunked => {
                let n = self.chunks.scan(data)?;
                self.done = self.chunks.is_done();
                Ok(n)
            }
            Framing::UntilClose => Ok(data.len()),
        }
    }
}

/// How a request exchange ended.
pub(super) enum Outcome {
    /// Finished; keep the client connection for another request or not.
    Done { keep: bool },
    /// The reused upstream connection failed before any response byte; the request can be re-sent on a fresh one.
    RetryFresh,
    /// The server could not be reached; nothing was sent.
    Unreachable,
}

#[derive(Debug)]
pub(super) enum BodyFailure {
    Client,
    Upstream,
    Malformed(ChunkError),
}
