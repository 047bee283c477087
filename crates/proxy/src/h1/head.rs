//! HTTP/1 message heads, sans-IO: parse a request or response head (httparse), decide its body framing and what
//! happens to the connections, and write the head to send on the other leg.
//!
//! The proxy is transparent except for `X-Forwarded-For` (the client address appended, one folded header) and, with
//! http-cookie persistence, the inserted cookie and its `Cache-Control: no-cache="set-cookie"`. Hop-by-hop headers
//! (`Connection` and the headers it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
//! `Upgrade`, `Proxy-Authenticate`) are not forwarded; framing headers are written from the framing decided here.
//! Anything ambiguous about where a body ends (both `Content-Length` and `Transfer-Encoding`, differing lengths, a
//! request coding other than chunked) is refused, so no request can be read one way here and another way upstream.

use std::fmt::Write as _;
use std::mem::MaybeUninit;

/// Most header fields in one head.
pub const MAX_HEADERS: usize = 100;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, relayed as is.
    Chunked,
    /// Until the server closes (responses only).
    UntilClose,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed head: {0}")]
    Invalid(&'static str),
    #[error("unsupported HTTP version")]
    Version,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("method not supported: {0}")]
    Method(&'static str),
}

impl HeadError {
    /// The status a client gets for this error in its request.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Invalid(_) => 400,
            HeadError::Version => 505,
            HeadError::TooManyHeaders => 431,
            HeadError::Method(_) => 405,
        }
    }

    /// The reason phrase of [`Self::status`].
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Invalid(_) => "Bad Request",
            HeadError::Version => "HTTP Version Not Supported",
            HeadError::TooManyHeaders => "Request Header Fields Too Large",
            HeadError::Method(_) => "Method Not Allowed",
        }
    }
}

/// What the engine needs to know about a parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// Bytes of the head in the input (the body starts there).
    pub head_len: usize,
    pub framing: Framing,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// HTTP/1.0 client.
    pub http10: bool,
    /// `HEAD`: the response has no body whatever its headers say.
    pub is_head: bool,
    /// `Connection: upgrade` + `Upgrade`: a 101 answer turns the connection into a tunnel.
    pub upgrade: bool,
    /// The decoded value of the persistence cookie, when asked for and present.
    pub cookie: Option<String>,
}

/// The header fields this module acts on. A head's names are classified once (by length, then one comparison)
/// instead of being compared with every known name in every pass: those comparisons were the biggest user-space
/// cost of a request after parsing itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Connection,
    ContentLength,
    TransferEncoding,
    Upgrade,
    Cookie,
    Host,
    XForwardedFor,
    CacheControl,
    /// `TE`, `Trailer`, `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`: dropped, nothing else to do.
    OtherHopByHop,
    Other,
}

impl Field {
    fn of(name: &str) -> Field {
        let is = |known: &str| token_is(name.as_bytes(), known);
        match name.len() {
            2 if is("te") => Field::OtherHopByHop,
            4 if is("host") => Field::Host,
            6 if is("cookie") => Field::Cookie,
            7 if is("upgrade") => Field::Upgrade,
            7 if is("trailer") => Field::OtherHopByHop,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::OtherHopByHop,
            13 if is("cache-control") => Field::CacheControl,
            14 if is("content-length") => Field::ContentLength,
            15 if is("x-forwarded-for") => Field::XForwardedFor,
            16 if is("proxy-connection") => Field::OtherHopByHop,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            18 if is("proxy-authenticate") => Field::OtherHopByHop,
            _ => Field::Other,
        }
    }

    /// Never forwarded as received (framing fields are written from the framing decided here).
    fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection | Field::Upgrade | Field::OtherHopByHop
        )
    }
}

/// The fields of one parsed head with their classification.
struct Fields<'h, 'b> {
    headers: &'h [httparse::Header<'b>],
    kinds: [Field; MAX_HEADERS],
}

impl<'h, 'b> Fields<'h, 'b> {
    fn new(headers: &'h [httparse::Header<'b>]) -> Self {
        let mut kinds = [Field::Other; MAX_HEADERS];
        for (kind, h) in kinds.iter_mut().zip(headers) {
            *kind = Field::of(h.name);
        }
        Fields { headers, kinds }
    }

    fn iter(&self) -> impl Iterator<Item = (Field, &'h httparse::Header<'b>)> + '_ {
        self.kinds.iter().copied().zip(self.headers.iter())
    }

    /// The fields of one kind, in order.
    fn all(&self, kind: Field) -> impl Iterator<Item = &'h httparse::Header<'b>> + '_ {
        self.iter().filter(move |(k, _)| *k == kind).map(|(_, h)| h)
    }

    fn has(&self, kind: Field) -> bool {
        self.all(kind).next().is_some()
    }
}

/// The comma-separated tokens of a field value, as bytes (a value that is not UTF-8 still has its tokens seen: a
/// garbled `Transfer-Encoding` must be refused, not ignored).
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// ASCII case-insensitive comparison of a field name or token with a known one.
fn token_is(token: &[u8], known: &str) -> bool {
    token.eq_ignore_ascii_case(known.as_bytes())
}

/// Appends one item to a comma-separated field value (repeated fields folded into one).
fn append_item(list: &mut Vec<u8>, item: &[u8]) {
    if !list.is_empty() {
        list.extend_from_slice(b", ");
    }
    list.extend_from_slice(item);
}

/// What the `Connection` fields of a head say.
#[derive(Default)]
struct ConnectionField<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Other names listed: those fields are hop-by-hop too.
    named: Vec<&'a [u8]>,
}

impl<'a> ConnectionField<'a> {
    fn read(fields: &Fields<'_, 'a>) -> Self {
        let mut c = ConnectionField::default();
        for h in fields.all(Field::Connection) {
            for t in tokens(h.value) {
                if token_is(t, "close") {
                    c.close = true;
                } else if token_is(t, "keep-alive") {
                    c.keep_alive = true;
                } else if token_is(t, "upgrade") {
                    c.upgrade = true;
                } else {
                    c.named.push(t);
                }
            }
        }
        c
    }

    fn names(&self, name: &str) -> bool {
        self.named.iter().any(|n| token_is(n, name))
    }
}

/// The `Content-Length` of a head: `Ok(None)` when absent; all values must agree.
fn content_length(fields: &Fields<'_, '_>) -> Result<Option<u64>, HeadError> {
    let mut found = None;
    for h in fields.all(Field::ContentLength) {
        for t in h.value.split(|&b| b == b',') {
            let t = t.trim_ascii();
            if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Invalid("content-length"));
            }
            // At most 19 digits: always fits in a u64.
            let n = t.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return Err(HeadError::Invalid("conflicting content-length"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Transfer codings, in order: `Ok(None)` when absent, else whether the last one is `chunked`.
fn transfer_encoding(fields: &Fields<'_, '_>) -> Result<Option<bool>, HeadError> {
    let mut seen = false;
    let mut chunked_last = false;
    for h in fields.all(Field::TransferEncoding) {
        for t in tokens(h.value) {
            if chunked_last {
                // A coding after chunked (or chunked twice) cannot be delimited.
                return Err(HeadError::Invalid("transfer-encoding after chunked"));
            }
            seen = true;
            chunked_last = token_is(t, "chunked");
        }
    }
    Ok(seen.then_some(chunked_last))
}

fn push_length(out: &mut Vec<u8>, n: u64) {
    // itoa: `write!` through `fmt` showed in the profile of every response.
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Splits an absolute-form target (`http://host:port/path?q`) into authority and origin-form path.
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let rest = if target.len() > 7 && target[..7].eq_ignore_ascii_case("http://") {
        &target[7..]
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case("https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// Parses a request head at the start of `input`. `Ok(None)`: incomplete, read more. On success the head to send
/// upstream is written to `out` (replacing its content).
pub fn parse_request(
    input: &[u8],
    cookie_name: Option<&str>,
    client_ip: &str,
    out: &mut Vec<u8>,
) -> Result<Option<RequestInfo>, HeadError> {
    // Uninitialised: zeroing 100 headers (3 KiB) per parse showed as the biggest user-space cost of a request.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(input, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Invalid("request head")),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Invalid("request line"));
    };
    if method == "CONNECT" {
        return Err(HeadError::Method("CONNECT"));
    }
    let http10 = version == 0;
    let fields = Fields::new(req.headers);
    let conn = ConnectionField::read(&fields);
    let length = content_length(&fields)?;
    let framing = match (transfer_encoding(&fields)?, length) {
        (Some(_), Some(_)) => {
            return Err(HeadError::Invalid(
                "both content-length and transfer-encoding",
            ));
        }
        (Some(_), None) if http10 => {
            return Err(HeadError::Invalid("transfer-encoding in HTTP/1.0"));
        }
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) => {
            return Err(HeadError::Invalid(
                "request transfer coding other than chunked",
            ));
        }
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    let upgrade = conn.upgrade && fields.has(Field::Upgrade);
    let keep_alive = if http10 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };
    let cookie = cookie_name.and_then(|name| find_cookie(&fields, name));

    out.clear();
    let (authority, path) = match absolute_form(target) {
        Some((a, p)) => (Some(a), if p.is_empty() { "/" } else { p }),
        None => (None, target),
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if path.starts_with('?') {
        out.push(b'/');
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut has_host = false;
    let mut forwarded_for: Option<Vec<u8>> = None;
    for (kind, h) in fields.iter() {
        let name = h.name;
        match kind {
            Field::TransferEncoding | Field::ContentLength => continue,
            k if k.is_hop_by_hop() => continue,
            Field::XForwardedFor => {
                append_item(forwarded_for.get_or_insert_with(Vec::new), h.value);
                continue;
            }
            _ => {}
        }
        if !conn.named.is_empty() && conn.names(name) {
            continue;
        }
        has_host |= kind == Field::Host;
        push_header(out, name, h.value);
    }
    if !has_host && let Some(a) = authority {
        push_header(out, "Host", a.as_bytes());
    }
    match framing {
        Framing::Chunked => push_header(out, "Transfer-Encoding", b"chunked"),
        Framing::Length(n) => push_length(out, n),
        Framing::Empty if length.is_some() => push_header(out, "Content-Length", b"0"),
        _ => {}
    }
    if upgrade {
        for h in fields.all(Field::Upgrade) {
            push_header(out, "Upgrade", h.value);
        }
        push_header(out, "Connection", b"upgrade");
    } else if http10 {
        // Keep the upstream connection for the next request, whatever this client does.
        push_header(out, "Connection", b"keep-alive");
    }
    match forwarded_for {
        Some(mut v) => {
            append_item(&mut v, client_ip.as_bytes());
            push_header(out, "X-Forwarded-For", &v);
        }
        None => push_header(out, "X-Forwarded-For", client_ip.as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(RequestInfo {
        head_len,
        framing,
        keep_alive,
        http10,
        is_head: method == "HEAD",
        upgrade,
        cookie,
    }))
}

/// The decoded value of cookie `name` in the `Cookie` fields.
fn find_cookie(fields: &Fields<'_, '_>, name: &str) -> Option<String> {
    crate::http::cookie_in(
        fields
            .all(Field::Cookie)
            .filter_map(|h| std::str::from_utf8(h.value).ok()),
        name,
    )
}

/// What the engine needs to know about a parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The client connection stays open after this response.
    pub client_keep_alive: bool,
    /// The upstream connection can carry another request after this response's body.
    pub server_reusable: bool,
    /// 101 to an upgrade request: both connections become a tunnel after the head.
    pub tunnel: bool,
}

impl ResponseInfo {
    /// 1xx other than 101: forwarded, then the final response follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses a response head at the start of `input`, for `request`. `Ok(None)`: incomplete. On success the head to
/// send to the client is written to `out` (replacing its content), with `set_cookie` (a full `Set-Cookie` value) and
/// the no-cache directive for it when given.
pub fn parse_response(
    input: &[u8],
    request: &RequestInfo,
    set_cookie: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseInfo>, HeadError> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        input,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Invalid("response head")),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(HeadError::Invalid("status line"));
    };
    let reason = resp.reason.unwrap_or("");
    let fields = Fields::new(resp.headers);
    let conn = ConnectionField::read(&fields);
    let interim = (100..200).contains(&status);
    let tunnel = status == 101;
    if tunnel && !request.upgrade {
        return Err(HeadError::Invalid(
            "101 to a request that did not ask to upgrade",
        ));
    }
    let length = content_length(&fields)?;
    let coding = transfer_encoding(&fields)?;
    let bodiless = interim || status == 204 || status == 304 || request.is_head;
    let framing = if bodiless {
        Framing::Empty
    } else {
        match (coding, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    if framing == Framing::Chunked && request.http10 {
        // An HTTP/1.0 request went upstream as such: a server must not chunk it.
        return Err(HeadError::Invalid(
            "chunked response to an HTTP/1.0 request",
        ));
    }
    let server_keeps = if version == 0 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };
    let server_reusable = !tunnel && server_keeps && framing != Framing::UntilClose;
    let client_keep_alive = !tunnel && request.keep_alive && framing != Framing::UntilClose;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse reads exactly three digits.
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut cache_control: Option<Vec<u8>> = None;
    for (kind, h) in fields.iter() {
        let name = h.name;
        match kind {
            Field::ContentLength => continue,
            k if k.is_hop_by_hop() => continue,
            Field::TransferEncoding => {
                // A coding we cannot delimit goes through as is, delimited by the close.
                if framing == Framing::UntilClose && coding == Some(false) {
                    push_header(out, name, h.value);
                }
                continue;
            }
            _ => {}
        }
        if !conn.named.is_empty() && conn.names(name) {
            continue;
        }
        if set_cookie.is_some() && kind == Field::CacheControl {
            append_item(cache_control.get_or_insert_with(Vec::new), h.value);
            continue;
        }
        push_header(out, name, h.value);
    }
    match framing {
        Framing::Chunked => push_header(out, "Transfer-Encoding", b"chunked"),
        Framing::Length(n) => push_length(out, n),
        // HEAD and 304 keep the length of the representation they describe.
        Framing::Empty if !interim && status != 204 => {
            if let Some(n) = length {
                push_length(out, n);
            }
        }
        _ => {}
    }
    if let Some(cookie) = set_cookie.filter(|_| !interim) {
        push_header(out, "Set-Cookie", cookie);
        const NOCACHE: &[u8] = b"no-cache=\"set-cookie\"";
        match cache_control {
            Some(mut v) => {
                append_item(&mut v, NOCACHE);
                push_header(out, "Cache-Control", &v);
            }
            None => push_header(out, "Cache-Control", NOCACHE),
        }
    } else if let Some(v) = cache_control {
        push_header(out, "Cache-Control", &v);
    }
    if tunnel {
        for h in fields.all(Field::Upgrade) {
            push_header(out, "Upgrade", h.value);
        }
        push_header(out, "Connection", b"upgrade");
    } else if !interim {
        if !client_keep_alive {
            push_header(out, "Connection", b"close");
        } else if request.http10 {
            push_header(out, "Connection", b"keep-alive");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseInfo {
        head_len,
        status,
        framing,
        client_keep_alive,
        server_reusable,
        tunnel,
    }))
}

/// A local response (error page, 503): complete message bytes.
pub fn local_response(
    status: u16,
    reason: &str,
    body: &str,
    keep_alive: bool,
    is_head: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    let _ = write!(
        ByteWriter(&mut out),
        "HTTP/1.1 {status:03} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-cache\r\n\
         Content-Length: {}\r\n{}\r\n",
        body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    );
    if !is_head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// `fmt::Write` into a byte vector.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(input: &str) -> (RequestInfo, String) {
        let mut out = Vec::new();
        let info = parse_request(input.as_bytes(), Some("SRV"), "10.0.0.7", &mut out)
            .unwrap()
            .unwrap();
        (info, String::from_utf8(out).unwrap())
    }

    fn resp(input: &str, request: &RequestInfo, cookie: Option<&str>) -> (ResponseInfo, String) {
        let mut out = Vec::new();
        let info = parse_response(
            input.as_bytes(),
            request,
            cookie.map(str::as_bytes),
            &mut out,
        )
        .unwrap()
        .unwrap();
        (info, String::from_utf8(out).unwrap())
    }

    #[test]
    fn request_is_forwarded_without_hop_by_hop_and_with_forwarded_for() {
        let (info, head) = req(
            "GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Foo\r\nX-Foo: secret\r\nKeep-Alive: 5\r\n\
             X-Forwarded-For: 10.9.9.9\r\nTE: trailers\r\nCookie: a=1; SRV=web%20a\r\nX-Forwarded-For: 10.8.8.8\r\n\r\n",
        );
        assert_eq!(info.framing, Framing::Empty);
        assert!(info.keep_alive && !info.http10 && !info.upgrade && !info.is_head);
        assert_eq!(info.cookie.as_deref(), Some("web a"));
        assert_eq!(
            head,
            "GET /a?b HTTP/1.1\r\nHost: x\r\nCookie: a=1; SRV=web%20a\r\n\
             X-Forwarded-For: 10.9.9.9, 10.8.8.8, 10.0.0.7\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_host() {
        let (_, head) = req("GET http://example.org:8080?q=1 HTTP/1.1\r\n\r\n");
        assert_eq!(
            head,
            "GET /?q=1 HTTP/1.1\r\nHost: example.org:8080\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n"
        );
    }

    #[test]
    fn http10_keeps_the_upstream_connection() {
        let (info, head) = req("GET / HTTP/1.0\r\n\r\n");
        assert!(info.http10 && !info.keep_alive);
        assert!(head.starts_with("GET / HTTP/1.0\r\n"));
        assert!(head.contains("Connection: keep-alive\r\n"));
        let (info, _) = req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(info.keep_alive);
    }

    #[test]
    fn request_framing() {
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
                .0
                .framing,
            Framing::Length(5)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")
                .0
                .framing,
            Framing::Length(5)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .0
                .framing,
            Framing::Chunked
        );
        let (_, head) = req("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(head.contains("Content-Length: 0\r\n"));
        let mut out = Vec::new();
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /\r\nHost: x\r\n\r\n",
            "\x00\x01\x02 garbage\r\n\r\n",
        ] {
            assert!(
                parse_request(bad.as_bytes(), None, "1.2.3.4", &mut out).is_err(),
                "{bad:?}"
            );
        }
        // A value that is not UTF-8 is still a coding other than chunked, never "no Transfer-Encoding".
        assert_eq!(
            parse_request(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: \xffchunked\r\nContent-Length: 5\r\n\r\n",
                None,
                "1.2.3.4",
                &mut out
            ),
            Err(HeadError::Invalid(
                "both content-length and transfer-encoding"
            ))
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: 9999999999999999999\r\n\r\n")
                .0
                .framing,
            Framing::Length(9_999_999_999_999_999_999)
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nConnection: Foo, CLOSE\r\nFoo: 1\r\nBar: 2\r\n\r\n"),
            (
                RequestInfo {
                    head_len: 58,
                    framing: Framing::Empty,
                    keep_alive: false,
                    http10: false,
                    is_head: false,
                    upgrade: false,
                    cookie: None,
                },
                "GET / HTTP/1.1\r\nBar: 2\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n".to_string()
            )
        );
        assert_eq!(
            parse_request(b"GET / HTTP/9.9\r\n\r\n", None, "1.2.3.4", &mut out),
            Err(HeadError::Version)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n", None, "1.2.3.4", &mut out),
            Ok(None)
        );
    }

    #[test]
    fn response_with_cookie_and_cache_control_folded() {
        let (r, _) = req("GET / HTTP/1.1\r\n\r\n");
        let input = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nCache-Control: max-age=60\r\nConnection: keep-alive\r\n\r\nabc";
        let (info, head) = resp(input, &r, Some("SRV=a; Path=/"));
        assert_eq!(info.framing, Framing::Length(3));
        assert!(info.client_keep_alive && info.server_reusable && !info.tunnel);
        assert_eq!(info.head_len, input.len() - 3);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: SRV=a; Path=/\r\n\
             Cache-Control: max-age=60, no-cache=\"set-cookie\"\r\n\r\n"
        );
    }

    #[test]
    fn response_framing_and_connections() {
        let (get, _) = req("GET / HTTP/1.1\r\n\r\n");
        let (head_req, _) = req("HEAD / HTTP/1.1\r\n\r\n");
        let (old, _) = req("GET / HTTP/1.0\r\n\r\n");
        let (close, _) = req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        let (i, h) = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get,
            None,
        );
        assert_eq!(i.framing, Framing::Chunked);
        assert!(h.contains("Transfer-Encoding: chunked\r\n"));
        let (i, h) = resp("HTTP/1.1 200 OK\r\n\r\n", &get, None);
        assert_eq!(i.framing, Framing::UntilClose);
        assert!(!i.client_keep_alive && !i.server_reusable);
        assert!(h.ends_with("Connection: close\r\n\r\n"));
        let (i, h) = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            &head_req,
            None,
        );
        assert_eq!(i.framing, Framing::Empty);
        assert!(h.contains("Content-Length: 10\r\n"));
        let (i, _) = resp("HTTP/1.1 304 Not Modified\r\n\r\n", &get, None);
        assert_eq!(i.framing, Framing::Empty);
        assert!(i.server_reusable);
        let (i, h) = resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &old, None);
        assert!(!i.server_reusable && !i.client_keep_alive);
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"));
        let (i, _) = resp(
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            &old,
            None,
        );
        assert!(i.server_reusable);
        let (i, h) = resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", &close, None);
        assert!(!i.client_keep_alive && i.server_reusable);
        assert!(h.contains("Connection: close\r\n"));
        let (i, h) = resp("HTTP/1.1 100 Continue\r\n\r\n", &get, Some("SRV=a"));
        assert!(i.is_interim());
        assert_eq!(h, "HTTP/1.1 100 Continue\r\n\r\n");
        let mut out = Vec::new();
        assert!(
            parse_response(
                b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n",
                &get,
                None,
                &mut out
            )
            .is_err()
        );
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &get,
                None,
                &mut out
            )
            .is_err()
        );
    }

    #[test]
    fn upgrade_passes_through() {
        let (r, head) =
            req("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(r.upgrade);
        assert!(head.contains("Upgrade: websocket\r\nConnection: upgrade\r\n"));
        let (i, h) = resp(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            &r,
            None,
        );
        assert!(i.tunnel && !i.server_reusable);
        assert_eq!(
            h,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn local_response_is_complete() {
        let r = String::from_utf8(local_response(
            503,
            "Service Unavailable",
            "<p>x</p>",
            true,
            false,
        ))
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(r.contains("Content-Length: 8\r\n"));
        assert!(!r.contains("Connection"));
        assert!(r.ends_with("\r\n\r\n<p>x</p>"));
    }

    proptest! {
        /// Whatever the input, parsing never panics, and a forwarded head always parses again as a request with the
        /// same framing and keep-alive decision.
        #[test]
        fn forwarded_heads_reparse(data in proptest::collection::vec(any::<u8>(), 0..300), tail in "[ -~]{0,60}") {
            let mut out = Vec::new();
            let _ = parse_request(&data, Some("SRV"), "127.0.0.1", &mut out);
            let input = format!("POST /x HTTP/1.1\r\nHost: h\r\nX-T: {tail}\r\nContent-Length: 3\r\n\r\nabc");
            if let Ok(Some(info)) = parse_request(input.as_bytes(), Some("SRV"), "127.0.0.1", &mut out) {
                let mut again = Vec::new();
                let re = parse_request(&out, None, "127.0.0.2", &mut again).unwrap().unwrap();
                prop_assert_eq!(re.framing, info.framing);
                prop_assert_eq!(re.head_len, out.len());
            }
        }

        #[test]
        fn response_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (r, _) = req("GET / HTTP/1.1\r\n\r\n");
            let mut out = Vec::new();
            let _ = parse_response(&data, &r, Some(b"SRV=a"), &mut out);
        }
    }
}
