//! Finds where a `Transfer-Encoding: chunked` body ends, so it can be relayed as raw bytes (re-chunking would cost a
//! copy and change nothing the receiver can see). Strict, since the bytes go upstream as they are and the server
//! must find the same end: CRLF line ends only, hex sizes of at most 15 digits, whitespace after a size only before
//! an extension or the line end (`1 2` is refused), extensions and trailer fields checked against the grammar of
//! RFC 9112 7.1 (a quoted string cannot hide a line end), and bounded size lines and trailers. A malformed or
//! smuggling body is an error, never a guess.

/// Most bytes after the digits of one size line (whitespace and extensions).
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
    /// After the digits of a size line, up to its CR: where exactly is in [`Line`], kept out of this enum so that
    /// the states every chunk goes through stay one flat jump.
    SizeLine,
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
    /// Inside a trailer line: its name, then (`trailer_value`) its value.
    Trailer,
    /// CR of a trailer line seen.
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
    Done,
}

/// Where in `BWS *( ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] BWS )` after the digits the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Whitespace right after the size: only `;` or the CR may follow.
    Ws,
    /// After `;`: whitespace, then a name.
    NameStart,
    Name,
    /// Whitespace after a name: `=`, `;` or the CR follow.
    AfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash in a quoted string.
    QuotedEscape,
    /// Whitespace after a value: `;` or the CR follow.
    AfterValue,
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
    /// Where in the size line after the digits (in [`State::SizeLine`]).
    line: Line,
    /// Bytes after the digits of the current size line.
    line_bytes: u32,
    /// In a trailer line's value (past its colon).
    trailer_value: bool,
    trailer_bytes: u32,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 9110 `tchar`: the bytes of a token (extension names and values, trailer field names).
static TCHAR: [bool; 256] = super::alnum_and(b"!#$%&'*+-.^_`|~");

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `qdtext` of a quoted string: anything visible or obs-text but `"` and `\\`, and whitespace.
fn is_qdtext(b: u8) -> bool {
    is_ws(b) || (b >= 0x21 && b != b'"' && b != b'\\' && b != 0x7f)
}

/// A byte of a field value (or of a quoted pair): visible, obs-text or whitespace; never a control.
fn is_value_byte(b: u8) -> bool {
    is_ws(b) || (b >= 0x21 && b != 0x7f)
}

impl ChunkedScanner {
    pub fn new() -> Self {
        Self {
            state: State::Size { digits: 0 },
            remaining: 0,
            line: Line::Ws,
            line_bytes: 0,
            trailer_value: false,
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
                        b';' | b' ' | b'\t' => {
                            self.line = if b == b';' { Line::NameStart } else { Line::Ws };
                            self.line_bytes = 1;
                            self.state = State::SizeLine;
                        }
                        _ => return Err(ChunkError("invalid character after chunk size")),
                    },
                },
                State::SizeLine => self.size_line(b)?,
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
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if is_tchar(b) {
                        self.trailer_value = false;
                        self.state = State::Trailer;
                        self.count_trailer()?;
                    } else {
                        return Err(ChunkError("invalid trailer"));
                    }
                }
                State::Trailer => self.trailer(b)?,
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

    /// One byte of a size line after its digits (rare: most size lines end right after them).
    #[inline(never)]
    fn size_line(&mut self, b: u8) -> Result<(), ChunkError> {
        use Line::*;
        self.line_bytes += 1;
        if self.line_bytes > MAX_EXTENSION {
            return Err(ChunkError("chunk extension too long"));
        }
        self.line = match (self.line, b) {
            (Ws | Name | AfterName | Token | AfterValue, b'\r') => {
                self.state = State::SizeLf;
                return Ok(());
            }
            // Whitespace after the digits: more of it, an extension or the end; never another digit (`1 2`).
            (Ws | NameStart | AfterName | ValueStart | AfterValue, b' ' | b'\t') => self.line,
            (Ws | Name | AfterName | Token | AfterValue, b';') => NameStart,
            (Ws, _) => return Err(ChunkError("whitespace inside chunk size")),
            (NameStart | Name, _) if is_tchar(b) => Name,
            (Name, b' ' | b'\t') => AfterName,
            (Name | AfterName, b'=') => ValueStart,
            (ValueStart, b'"') => Quoted,
            (ValueStart | Token, _) if is_tchar(b) => Token,
            (Token, b' ' | b'\t') => AfterValue,
            (Quoted, b'"') => AfterValue,
            (Quoted, b'\\') => QuotedEscape,
            (Quoted, _) if is_qdtext(b) => Quoted,
            (QuotedEscape, _) if is_value_byte(b) => Quoted,
            _ => return Err(ChunkError("invalid chunk extension")),
        };
        Ok(())
    }

    /// One byte of a trailer line after its first: a token name, `:`, then a field value up to the CR.
    #[inline(never)]
    fn trailer(&mut self, b: u8) -> Result<(), ChunkError> {
        self.count_trailer()?;
        match (self.trailer_value, b) {
            (true, b'\r') => self.state = State::TrailerLf,
            (true, _) if is_value_byte(b) => {}
            (false, b':') => self.trailer_value = true,
            (false, _) if is_tchar(b) => {}
            _ => return Err(ChunkError("invalid trailer")),
        }
        Ok(())
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
            // Whitespace inside a size, and extensions or trailers outside their grammar.
            b"1 2\r\nx\r\n0\r\n\r\n",
            b"1\t2\r\nx\r\n0\r\n\r\n",
            b"1 x\r\n",
            b"1;\r\n",
            b"1;=v\r\n",
            b"1;a=\r\n",
            b"1;a=\"x\r\n\"\r\n",
            b"1;a=\"x\nx\"\r\n",
            b"1;a\x00\r\n",
            b"1;a=b c\r\n",
            b"1;a b\r\n",
            b"0\r\n folded: x\r\n\r\n",
            b"0\r\nX : 1\r\n\r\n",
            b"0\r\n: 1\r\n\r\n",
            b"0\r\nX\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ] {
            let mut s = ChunkedScanner::new();
            assert!(s.scan(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn extensions_and_whitespace_that_rfc_9112_allows() {
        for ok in [
            &b"1 \r\nx\r\n0\r\n\r\n"[..],
            b"1 ;a\r\nx\r\n0\r\n\r\n",
            b"1;a;b=c\r\nx\r\n0\r\n\r\n",
            b"1 ; a = b ; c=\"q \\\" ;x\"\r\nx\r\n0\r\n\r\n",
            b"1;a=b \r\nx\r\n0;last\r\nX-Sum: 1 2\r\nY:\r\n\r\n",
        ] {
            let mut s = ChunkedScanner::new();
            assert_eq!(
                s.scan(ok),
                Ok(ok.len()),
                "{:?}",
                String::from_utf8_lossy(ok)
            );
            assert!(s.is_done());
        }
    }

    #[test]
    fn size_lines_and_trailers_are_bounded() {
        let mut line = b"1;a=".to_vec();
        line.extend(std::iter::repeat_n(b'v', MAX_EXTENSION as usize));
        line.extend_from_slice(b"\r\n");
        assert_eq!(
            ChunkedScanner::new().scan(&line),
            Err(ChunkError("chunk extension too long"))
        );
        let mut body = b"0\r\nX: ".to_vec();
        body.extend(std::iter::repeat_n(b'v', MAX_TRAILERS as usize));
        assert_eq!(
            ChunkedScanner::new().scan(&body),
            Err(ChunkError("trailers too long"))
        );
        let mut zeros = vec![b'0'; 16];
        zeros.extend_from_slice(b"1\r\n");
        assert!(ChunkedScanner::new().scan(&zeros).is_err());
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
