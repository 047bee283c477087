//! HTTP/1 message heads, sans-IO: parse a request or response head (httparse), decide its body framing and what
//! happens to the connections, and write the head to send on the other leg.
//!
//! The proxy is transparent except for `X-Forwarded-For` (the client address appended, one folded header) and, with
//! http-cookie persistence, the inserted cookie and its `Cache-Control: no-cache="set-cookie"`. Hop-by-hop headers
//! (`Connection` and the headers it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
//! `Upgrade`, `Proxy-Authenticate`) are not forwarded; framing headers are written from the framing decided here.
//! Anything ambiguous about where a body ends (both `Content-Length` and `Transfer-Encoding`, differing lengths, a
//! request coding other than exactly `chunked`) is refused, so no request can be read one way here and another way
//! upstream; so is what RFC 9112 says a server must reject (a missing, repeated or invalid `Host`, a request-target
//! that does not fit its method). httparse already refuses whitespace before a colon, obs-fold, bare CR and invalid
//! characters in names and values. Everything here compares bytes: a target or value may hold any byte httparse
//! lets through, so no `str` is sliced at a byte index.

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
    /// Replaced by ours on TLS connections, forwarded as received otherwise.
    XForwardedProto,
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
            17 if is("x-forwarded-proto") => Field::XForwardedProto,
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

/// Whether a request is chunked: `Ok(false)` without `Transfer-Encoding`, `Ok(true)` when it is exactly `chunked`
/// (one field, one coding). Anything else is refused: a coding this proxy would lose (`gzip, chunked` forwarded as
/// `chunked`), one nothing can delimit (`gzip`, `chunked, gzip`), `chunked` twice, or an empty value.
fn request_chunked(fields: &Fields<'_, '_>) -> Result<bool, HeadError> {
    exactly_chunked(fields.all(Field::TransferEncoding).map(|h| h.value))
        .map_err(|()| HeadError::Invalid("transfer-encoding other than chunked"))
}

/// The one `Transfer-Encoding` rule for requests, over the field values (both engines use it): `Ok(false)` without
/// any, `Ok(true)` for exactly one field holding exactly `chunked`, `Err` for anything else.
pub(crate) fn exactly_chunked<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Result<bool, ()> {
    let Some(first) = values.next() else {
        return Ok(false);
    };
    let mut codings = tokens(first);
    match (codings.next(), codings.next(), values.next()) {
        (Some(c), None, None) if token_is(c, "chunked") => Ok(true),
        _ => Err(()),
    }
}

/// What the `Transfer-Encoding` fields of a response say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    /// Exactly `chunked`.
    Chunked,
    /// Other codings, then `chunked` (`gzip, chunked`): delimited by the chunks, the fields forwarded as they are.
    CodedChunked,
    /// The last coding is not `chunked`: delimited by the close, the fields forwarded as they are.
    NotChunked,
}

/// The transfer codings of a response: `Ok(None)` without `Transfer-Encoding`. A coding after `chunked` (or
/// `chunked` twice) cannot be delimited, and an empty value says nothing: both refused.
fn response_coding(fields: &Fields<'_, '_>) -> Result<Option<Coding>, HeadError> {
    let mut present = false;
    let mut count = 0usize;
    let mut chunked_last = false;
    for h in fields.all(Field::TransferEncoding) {
        present = true;
        for t in tokens(h.value) {
            if chunked_last {
                return Err(HeadError::Invalid("transfer-encoding after chunked"));
            }
            count += 1;
            chunked_last = token_is(t, "chunked");
        }
    }
    Ok(match (present, count, chunked_last) {
        (false, ..) => None,
        (true, 0, _) => return Err(HeadError::Invalid("empty transfer-encoding")),
        (true, 1, true) => Some(Coding::Chunked),
        (true, _, true) => Some(Coding::CodedChunked),
        (true, _, false) => Some(Coding::NotChunked),
    })
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

/// The request-target forms this proxy forwards (RFC 9112 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'a> {
    /// `/path?query`, or `*` of `OPTIONS`: forwarded as it is.
    Origin(&'a [u8]),
    /// `http://authority/path?query`: forwarded in origin-form, with `Host: authority`.
    Absolute { authority: &'a [u8], path: &'a [u8] },
}

/// Checks a request-target against its method and splits an absolute-form one. Bytes all along: a `str` sliced
/// at a byte index inside a character (`/abcdeé`) panicked the connection task.
fn request_target<'a>(method: &str, target: &'a [u8]) -> Result<Target<'a>, HeadError> {
    // httparse lets visible ASCII and bytes >= 0x80 through; a URI is ASCII and its fragment is never sent (HAProxy
    // refuses both too, unless told otherwise).
    if !target.is_ascii() || target.contains(&b'#') {
        return Err(HeadError::Invalid("request-target character"));
    }
    match target {
        [b'/', ..] => return Ok(Target::Origin(target)),
        b"*" if method == "OPTIONS" => return Ok(Target::Origin(target)),
        b"*" => {
            return Err(HeadError::Invalid(
                "asterisk-form for a method other than OPTIONS",
            ));
        }
        _ => {}
    }
    let rest = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))
        .ok_or(HeadError::Invalid("request-target form"))?;
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // An http(s) URI with an empty host is invalid (RFC 9110 4.2.1); so is userinfo (`@` is no host character).
    if authority.is_empty() || !valid_host(authority) {
        return Err(HeadError::Invalid("absolute-form authority"));
    }
    Ok(Target::Absolute { authority, path })
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, tail) = s.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(tail)
}

/// The bytes of a reg-name (RFC 3986 3.2.2; IPv4 addresses are reg-names too): unreserved and sub-delims, without
/// `,`, so that a `Host` listing two names is refused rather than read one way here and another way upstream.
static REG_NAME: [bool; 256] = super::alnum_and(b"-._~!$&'()*+;=");

/// `uri-host [":" port]` (RFC 9110 7.2): a `Host` value or an absolute-form authority. Empty is a valid `Host`
/// (a target without authority).
fn valid_host(v: &[u8]) -> bool {
    let (host_ok, rest) = match v.split_first() {
        Some((b'[', tail)) => match tail.iter().position(|&b| b == b']') {
            Some(close) => (
                close > 0
                    && tail[..close]
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
                &tail[close + 1..],
            ),
            None => return false,
        },
        _ => {
            let end = v.iter().position(|&b| b == b':').unwrap_or(v.len());
            let (name, rest) = v.split_at(end);
            (reg_name(name), rest)
        }
    };
    host_ok
        && match rest.split_first() {
            None => true,
            Some((b':', port)) => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
            Some(_) => false,
        }
}

/// Reg-name bytes, `%` only as the start of a percent-encoded octet.
fn reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = name.get(i) {
        if b == b'%' {
            if !name
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
        } else if REG_NAME[usize::from(b)] {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Parses a request head at the start of `input`. `Ok(None)`: incomplete, read more. On success the head to send
/// upstream is written to `out` (replacing its content).
pub fn parse_request(
    input: &[u8],
    cookie_name: Option<&str>,
    client_ip: &str,
    out: &mut Vec<u8>,
) -> Result<Option<RequestInfo>, HeadError> {
    parse_request_from(input, cookie_name, client_ip, false, out)
}

/// [`parse_request`] for a client that came over TLS (`https`): the head sent upstream says so with
/// `X-Forwarded-Proto: https`, replacing any the client sent.
pub(crate) fn parse_request_from(
    input: &[u8],
    cookie_name: Option<&str>,
    client_ip: &str,
    https: bool,
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
    let target = request_target(method, target.as_bytes())?;
    let http10 = version == 0;
    let fields = Fields::new(req.headers);
    let conn = ConnectionField::read(&fields);
    let length = content_length(&fields)?;
    let framing = match (request_chunked(&fields)?, length) {
        (true, Some(_)) => {
            return Err(HeadError::Invalid(
                "both content-length and transfer-encoding",
            ));
        }
        (true, None) if http10 => {
            return Err(HeadError::Invalid("transfer-encoding in HTTP/1.0"));
        }
        (true, None) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    // An Upgrade in HTTP/1.0 is ignored (RFC 9110 7.8).
    let upgrade = !http10 && conn.upgrade && fields.has(Field::Upgrade);
    let keep_alive = if http10 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };
    let cookie = cookie_name.and_then(|name| find_cookie(&fields, name));

    out.clear();
    let (authority, path) = match target {
        Target::Origin(p) => (None, p),
        Target::Absolute { authority, path } => (
            Some(authority),
            if path.is_empty() { &b"/"[..] } else { path },
        ),
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if path.first() == Some(&b'?') {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut hosts = 0usize;
    let mut host: &[u8] = b"";
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
            Field::XForwardedProto if https => continue,
            Field::Host => {
                hosts += 1;
                host = h.value;
                // An absolute-form target's authority replaces the Host field (RFC 9112 3.2.2).
                if authority.is_none() {
                    push_header(out, name, h.value);
                }
                continue;
            }
            _ => {}
        }
        if !conn.named.is_empty() && conn.names(name) {
            continue;
        }
        push_header(out, name, h.value);
    }
    // RFC 9112 3.2: exactly one valid Host in HTTP/1.1 (at most one in HTTP/1.0), else 400.
    match hosts {
        0 if !http10 => return Err(HeadError::Invalid("no host")),
        0 => {}
        1 if valid_host(host) => {}
        1 => return Err(HeadError::Invalid("invalid host")),
        _ => return Err(HeadError::Invalid("more than one host")),
    }
    if !conn.named.is_empty() && conn.names("host") {
        // A proxy must drop the fields Connection names (RFC 9110 7.6.1): without Host the request is invalid.
        return Err(HeadError::Invalid("connection names host"));
    }
    if let Some(a) = authority {
        push_header(out, "Host", a);
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
    if https {
        push_header(out, "X-Forwarded-Proto", b"https");
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
    if status < 100 {
        // httparse reads any three digits; `020` would go out as `20`, a status line no client reads.
        return Err(HeadError::Invalid("status code below 100"));
    }
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
    let coding = response_coding(&fields)?;
    if coding.is_some() {
        // RFC 9112 6.3 would have the codings win over the length, but a server sending both is broken or being
        // used to split a response: refused (502), as are codings in HTTP/1.0, whose framing RFC 9112 6.1 calls
        // faulty.
        if length.is_some() {
            return Err(HeadError::Invalid(
                "response with both content-length and transfer-encoding",
            ));
        }
        if version == 0 {
            return Err(HeadError::Invalid(
                "transfer-encoding in an HTTP/1.0 response",
            ));
        }
    }
    let bodiless = interim || status == 204 || status == 304 || request.is_head;
    let framing = if bodiless {
        Framing::Empty
    } else {
        match (coding, length) {
            (Some(Coding::NotChunked), _) => Framing::UntilClose,
            (Some(_), _) => Framing::Chunked,
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
    // Three digits: httparse reads exactly three, and those below 100 are refused above.
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
                // Codings other than chunked go through as they are: delimited by the chunks (`gzip, chunked`,
                // the gzip must not be lost) or by the close (a coding we cannot delimit).
                let forwarded = match framing {
                    Framing::Chunked => coding == Some(Coding::CodedChunked),
                    Framing::UntilClose => coding == Some(Coding::NotChunked),
                    _ => false,
                };
                if forwarded {
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
        Framing::Chunked if coding == Some(Coding::Chunked) => {
            push_header(out, "Transfer-Encoding", b"chunked");
        }
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
    fn over_tls_forwarded_proto_is_ours() {
        let input = "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\n\r\n";
        let mut out = Vec::new();
        parse_request_from(input.as_bytes(), None, "10.0.0.7", true, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\n\r\n"
        );
        // Plain HTTP: the client's is forwarded as received, none added.
        let mut out = Vec::new();
        parse_request(input.as_bytes(), None, "10.0.0.7", &mut out)
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("X-Forwarded-Proto: http\r\n")
        );
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
        // The authority replaces the Host field (RFC 9112 3.2.2).
        let (_, head) =
            req("GET http://example.org:8080?q=1 HTTP/1.1\r\nHost: other\r\nX: 1\r\n\r\n");
        assert_eq!(
            head,
            "GET /?q=1 HTTP/1.1\r\nX: 1\r\nHost: example.org:8080\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n"
        );
        let (_, head) = req("GET HTTPS://example.org/a/b HTTP/1.0\r\n\r\n");
        assert_eq!(
            head,
            "GET /a/b HTTP/1.0\r\nHost: example.org\r\nConnection: keep-alive\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n"
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
            req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")
                .0
                .framing,
            Framing::Length(5)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n")
                .0
                .framing,
            Framing::Length(5)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
                .0
                .framing,
            Framing::Chunked
        );
        let (_, head) = req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        assert!(head.contains("Content-Length: 0\r\n"));
        let mut out = Vec::new();
        for bad in [
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
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
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \xffchunked\r\nContent-Length: 5\r\n\r\n",
                None,
                "1.2.3.4",
                &mut out
            ),
            Err(HeadError::Invalid("transfer-encoding other than chunked"))
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9999999999999999999\r\n\r\n")
                .0
                .framing,
            Framing::Length(9_999_999_999_999_999_999)
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: h\r\nConnection: Foo, CLOSE\r\nFoo: 1\r\nBar: 2\r\n\r\n"),
            (
                RequestInfo {
                    head_len: 67,
                    framing: Framing::Empty,
                    keep_alive: false,
                    http10: false,
                    is_head: false,
                    upgrade: false,
                    cookie: None,
                },
                "GET / HTTP/1.1\r\nHost: h\r\nBar: 2\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n"
                    .to_string()
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

    /// `GET /abcdeé`: the target was sliced at byte 7, inside the `é`, and the connection task panicked.
    #[test]
    fn non_ascii_target_is_refused_not_a_panic() {
        let mut out = Vec::new();
        for target in ["/abcdeé", "/abcdefé", "http://é/", "https://x/é", "é"] {
            let input = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(
                parse_request(input.as_bytes(), None, "1.2.3.4", &mut out),
                Err(HeadError::Invalid("request-target character")),
                "{target}"
            );
        }
    }

    /// What RFC 9112 (and RFC 9110 for Host) says a server must reject, and the forms that stay accepted.
    #[test]
    fn rfc9112_refusals() {
        let mut out = Vec::new();
        let refused = |input: &[u8], why: &str| {
            let mut out = Vec::new();
            let r = parse_request(input, None, "1.2.3.4", &mut out);
            assert!(
                matches!(r, Err(HeadError::Invalid(_))),
                "{why}: {:?} -> {r:?}",
                String::from_utf8_lossy(input)
            );
        };
        for (input, why) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "no Host in HTTP/1.1"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", "two Host"),
            (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", "two Host in HTTP/1.0"),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "Host with a space"),
            (b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", "Host list"),
            (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", "Host with userinfo"),
            (b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", "Host with a bad port"),
            (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", "unclosed IP literal"),
            (b"GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", "bad percent-encoding"),
            (b"GET / HTTP/1.1\r\nConnection: host\r\nHost: a\r\n\r\n", "Connection naming Host"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "gzip, chunked"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", "gzip then chunked in two fields"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\nContent-Length: 3\r\n\r\n", "empty Transfer-Encoding"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", "chunked with a parameter"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", "space before colon"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n", "obs-fold"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", "bare CR"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", "NUL in a value"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX\x7fY: 1\r\n\r\n", "DEL in a name"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX\"Y: 1\r\n\r\n", "quote in a name"),
            (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", "whitespace before the first field"),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", "differing length list"),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding in HTTP/1.0"),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "asterisk-form for GET"),
            (b"GET example.org:80 HTTP/1.1\r\nHost: a\r\n\r\n", "authority-form for GET"),
            (b"GET ftp://example.org/ HTTP/1.1\r\nHost: a\r\n\r\n", "another scheme"),
            (b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", "empty authority"),
            (b"GET http://u:p@example.org/ HTTP/1.1\r\nHost: a\r\n\r\n", "userinfo"),
            (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", "fragment"),
            (b"GET /a\xff HTTP/1.1\r\nHost: a\r\n\r\n", "byte >= 0x80 in the target"),
        ] {
            refused(input, why);
        }
        assert_eq!(
            parse_request(
                b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                None,
                "1.2.3.4",
                &mut out
            ),
            Err(HeadError::Method("CONNECT"))
        );
        for ok in [
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost:\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a%41b.example\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n",
            "GET /a?b=%C3%A9 HTTP/1.1\r\nHost: a\r\nX: café\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_request(ok.as_bytes(), None, "1.2.3.4", &mut out),
                    Ok(Some(_))
                ),
                "{ok:?}"
            );
        }
        let (_, head) = req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(
            head.starts_with("OPTIONS * HTTP/1.1\r\nHost: a\r\n"),
            "{head}"
        );
        // Upgrade is ignored in HTTP/1.0 (RFC 9110 7.8).
        let (info, head) =
            req("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(!info.upgrade && !head.contains("pgrade"), "{head}");
    }

    #[test]
    fn response_codings_kept_and_ambiguous_framing_refused() {
        let (get, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let (i, h) = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &get,
            None,
        );
        assert_eq!(i.framing, Framing::Chunked);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        );
        let (i, h) = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get,
            None,
        );
        assert_eq!(i.framing, Framing::Chunked);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let (i, h) = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            &get,
            None,
        );
        assert_eq!(i.framing, Framing::UntilClose);
        assert!(h.contains("Transfer-Encoding: gzip\r\n"), "{h}");
        let mut out = Vec::new();
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            // Found by fuzzing: `020` went out as `HTTP/1.1 20`.
            b"HTTP/1.1 020 o\nX-A: 1\r\n\r\n",
        ] {
            assert!(
                parse_response(bad, &get, None, &mut out).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn response_with_cookie_and_cache_control_folded() {
        let (r, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
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
        let (get, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let (head_req, _) = req("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
        let (old, _) = req("GET / HTTP/1.0\r\n\r\n");
        let (close, _) = req("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
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
            let (r, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
            let mut out = Vec::new();
            let _ = parse_response(&data, &r, Some(b"SRV=a"), &mut out);
        }
    }
}
