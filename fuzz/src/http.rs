//! The native HTTP/1 engine's parsers: request heads, response heads, chunked bodies.

use tandem_proxy::fuzzing::{
    ChunkedScanner, Framing, HeadError, RequestInfo, parse_request, parse_response,
};

const CLIENT: &str = "192.0.2.1";

/// A cut inside `0..len` chosen by the input, so each input also checks one prefix.
fn cut(data: &[u8], len: usize) -> usize {
    let seed = data.iter().take(8).fold(data.len(), |h, &b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    seed % len.max(1)
}

/// Request heads: a parsed head lies inside the input, the head alone parses the same, a shorter prefix is only
/// incomplete (never refused, never another request), and the head forwarded upstream parses again as a request
/// with the same framing and exactly the Host it must have.
pub fn http_request(data: &[u8]) {
    let mut out = Vec::new();
    let Ok(Some(info)) = parse_request(data, Some("SRV"), CLIENT, &mut out) else {
        return;
    };
    assert!(info.head_len <= data.len());
    let mut again = Vec::new();
    assert_eq!(
        parse_request(&data[..info.head_len], Some("SRV"), CLIENT, &mut again),
        Ok(Some(info.clone()))
    );
    assert_eq!(again, out);
    let prefix = &data[..cut(data, info.head_len)];
    assert_eq!(
        parse_request(prefix, Some("SRV"), CLIENT, &mut again),
        Ok(None),
        "a prefix of a complete head must be incomplete"
    );
    let re = match parse_request(&out, None, "192.0.2.2", &mut again) {
        Ok(Some(re)) => re,
        // Up to three fields are added (Host, framing, X-Forwarded-For, Connection): past the limit is the limit.
        Err(HeadError::TooManyHeaders) => return,
        other => panic!(
            "forwarded head does not parse: {other:?}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(re.head_len, out.len());
    assert_eq!(re.framing, info.framing);
    assert_eq!(
        (re.http10, re.is_head, re.upgrade),
        (info.http10, info.is_head, info.upgrade)
    );
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let hosts = text.matches("\r\nhost:").count();
    assert!(
        hosts == 1 || (info.http10 && hosts == 0),
        "{hosts} Host fields forwarded"
    );
    let te = text.matches("\r\ntransfer-encoding:").count();
    assert_eq!(te, usize::from(info.framing == Framing::Chunked));
    if info.framing == Framing::Chunked {
        assert!(text.contains("\r\ntransfer-encoding: chunked\r\n"));
    }
}

/// The request a response answers, from the input's first byte.
fn request_of(flags: u8) -> RequestInfo {
    RequestInfo {
        head_len: 0,
        framing: Framing::Empty,
        keep_alive: flags & 1 != 0,
        http10: flags & 2 != 0,
        is_head: flags & 4 != 0,
        upgrade: flags & 8 != 0,
        cookie: None,
    }
}

/// Response heads (the first input byte picks the request they answer and whether a cookie is inserted): the same
/// properties as requests, the head sent to the client parsing again with the same status and framing.
pub fn http_response(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let request = request_of(flags);
    let cookie = (flags & 16 != 0).then_some(&b"SRV=a; Path=/"[..]);
    let mut out = Vec::new();
    let Ok(Some(info)) = parse_response(input, &request, cookie, &mut out) else {
        return;
    };
    assert!(info.head_len <= input.len());
    let mut again = Vec::new();
    assert_eq!(
        parse_response(&input[..info.head_len], &request, cookie, &mut again),
        Ok(Some(info.clone()))
    );
    assert_eq!(again, out);
    let prefix = &input[..cut(input, info.head_len)];
    assert_eq!(
        parse_response(prefix, &request, cookie, &mut again),
        Ok(None),
        "a prefix of a complete head must be incomplete"
    );
    if info.framing == Framing::Chunked {
        assert!(!request.http10, "chunked response to an HTTP/1.0 client");
    }
    let re = match parse_response(&out, &request, None, &mut again) {
        Ok(Some(re)) => re,
        Err(HeadError::TooManyHeaders) => return,
        other => panic!(
            "head sent to the client does not parse: {other:?}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(re.head_len, out.len());
    assert_eq!(
        (re.status, re.framing, re.tunnel),
        (info.status, info.framing, info.tunnel)
    );
}

/// Chunked bodies: however the stream is cut into reads (whole, two cuts the input picks, byte by byte), the
/// scanner finds the same end or the same error; the end lies inside the input and the body alone ends there too.
pub fn chunked(data: &[u8]) {
    let whole = scan_in_pieces(data, &[]);
    let a = cut(data, data.len() + 1);
    let b = data
        .len()
        .saturating_sub(cut(&data[a..], data.len() - a + 1));
    let mut cuts = [a, b];
    cuts.sort_unstable();
    assert_eq!(scan_in_pieces(data, &cuts), whole);
    let bytes: Vec<usize> = (1..data.len()).collect();
    assert_eq!(scan_in_pieces(data, &bytes), whole);
    if let Ok((used, true)) = whole {
        assert!(used <= data.len());
        assert_eq!(scan_in_pieces(&data[..used], &[]), Ok((used, true)));
    } else if let Ok((used, false)) = whole {
        assert_eq!(used, data.len(), "an unfinished body takes every byte");
    }
}

/// Scans `data` in pieces cut at `cuts` (ascending); returns the bytes of the body and whether it ended.
fn scan_in_pieces(
    data: &[u8],
    cuts: &[usize],
) -> Result<(usize, bool), tandem_proxy::fuzzing::ChunkError> {
    let mut scanner = ChunkedScanner::new();
    let mut used = 0;
    let mut pos = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        if end < pos {
            continue;
        }
        let n = scanner.scan(&data[pos..end])?;
        assert!(n <= end - pos);
        used += n;
        if scanner.is_done() {
            return Ok((used, true));
        }
        assert_eq!(n, end - pos, "a body not done takes the whole read");
        pos = end;
    }
    Ok((used, false))
}
