//! Finds where a `Transfer-Encoding: chunked` body ends, so it can be relayed as raw bytes (re-chunking would cost a
//! copy and change nothing the receiver can see). Strict: CRLF line ends only, hex sizes of at most 15 digits, and
//! bounded extension and trailer sizes, so a malformed or smuggling body is an error, never a guess.

/// Most bytes of chunk extensions on one size line.
const MAX_EXTENSION: u32 = 4 * 1024;
/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: u32 = 32 * 1024;
/// 15 hex digits (60 bits): no overflow, and far beyond any real body.
const MAX_SIZE_DIGITS: u8 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size of a chunk.
    Size {
        digits: u8,
    },
    /// Skipping `;ext` (or whitespace) up to the CR ending the size line.
    Extension {
        bytes: u32,
    },
    /// The size line's CR seen, LF expected.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Data done, CR expected.
    DataCr,
    /// Data done, LF expected.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// CR of a trailer line seen.
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
    Done,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(pub &'static str);

/// Incremental scanner over a chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    /// Chunk size being parsed, then data bytes left in the current chunk.
    remaining: u64,
    trailer_bytes: u32,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScanner {
    pub fn new() -> Self {
        Self {
            state: State::Size { digits: 0 },
            remaining: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the whole body (last chunk, trailers, final CRLF) has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans the next bytes of the stream; returns how many of them belong to the body (all of them unless the body
    /// ends inside `data`: what follows is the next message).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let take =
                        (data.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Size { digits } => match hex_value(b) {
                    Some(v) => {
                        if digits >= MAX_SIZE_DIGITS {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.remaining = (self.remaining << 4) | u64::from(v);
                        self.state = State::Size { digits: digits + 1 };
                    }
                    None if digits == 0 => return Err(ChunkError("missing chunk size")),
                    None => match b {
                        b'\r' => self.state = State::SizeLf,
                        b';' | b' ' | b'\t' => self.state = State::Extension { bytes: 1 },
                        _ => return Err(ChunkError("invalid character after chunk size")),
                    },
                },
                State::Extension { bytes } => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' | 0 => return Err(ChunkError("invalid chunk extension")),
                    _ if bytes >= MAX_EXTENSION => {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    _ => self.state = State::Extension { bytes: bytes + 1 },
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR after chunk size"));
                    }
                    self.state = if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR after chunk data"));
                    }
                    self.state = State::Size { digits: 0 };
                    self.remaining = 0;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else {
                        self.count_trailer()?;
                        if b == b'\n' || b == 0 {
                            return Err(ChunkError("invalid trailer"));
                        }
                        State::Trailer
                    };
                }
                State::Trailer => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\n' | 0 => return Err(ChunkError("invalid trailer")),
                        _ => {}
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR in trailer"));
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError("bare CR at end of body"));
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(ChunkError("trailers too long"));
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(chunks: &[Vec<u8>], trailers: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for t in trailers {
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn finds_the_end_and_leaves_the_next_message() {
        let mut body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n".to_vec();
        let len = body.len();
        body.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut s = ChunkedScanner::new();
        assert_eq!(s.scan(&body), Ok(len));
        assert!(s.is_done());
    }

    #[test]
    fn rejects_malformed_bodies() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n",
            b"5\r\nhello!\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\n\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            let mut s = ChunkedScanner::new();
            assert!(s.scan(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        /// Any chunking of any body, fed in any split, is found to end exactly at its end.
        #[test]
        fn any_split_finds_the_exact_end(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            trailer in proptest::bool::ANY,
            cuts in proptest::collection::vec(0usize..4000, 0..6),
        ) {
            let trailers: &[&str] = if trailer { &["X-Checksum: abc", "Y: 2"] } else { &[] };
            let body = encode(&chunks, trailers);
            let mut stream = body.clone();
            stream.extend_from_slice(b"NEXT");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut s = ChunkedScanner::new();
            let mut pos = 0;
            let mut used = 0;
            for cut in cuts {
                if cut < pos { continue; }
                let n = s.scan(&stream[pos..cut]).unwrap();
                used += n;
                if s.is_done() { break; }
                prop_assert_eq!(n, cut - pos);
                pos = cut;
            }
            prop_assert!(s.is_done());
            prop_assert_eq!(used, body.len());
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut s = ChunkedScanner::new();
            let _ = s.scan(&data);
        }
    }
}
