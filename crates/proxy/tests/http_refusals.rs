//! What RFC 9112 says a server must reject, refused by the native engine with 400 before anything reaches a real
//! server (a backend counts the requests it sees: none), and responses whose framing could split or smuggle
//! refused with 502; `gzip, chunked` responses keep their codings. The hyper engine keeps hyper's parser and adds
//! the Host and coding refusals hyper lacks (last test).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tandem_config::model::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` in one write and reads everything the proxy answers until it closes.
async fn exchange(vip: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(vip).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const REFUSED: &[(&str, &[u8])] = &[
    ("non-ASCII target (panicked the connection task)", b"GET /abcde\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n"),
    ("two Host fields", b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
    ("two Host fields in HTTP/1.0", b"GET / HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n"),
    ("invalid Host", b"GET / HTTP/1.1\r\nHost: x y\r\n\r\n"),
    ("Host list", b"GET / HTTP/1.1\r\nHost: x,y\r\n\r\n"),
    ("Connection naming Host", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n"),
    ("gzip, chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("gzip then chunked in two fields", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("chunked, gzip", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ("chunked twice", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("empty Transfer-Encoding with a length", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\nContent-Length: 3\r\n\r\nabc"),
    ("Transfer-Encoding and Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("Transfer-Encoding in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("differing Content-Length list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd"),
    ("differing Content-Length fields", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"),
    ("signed Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd"),
    ("whitespace inside a chunk size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1 2\r\nx\r\n0\r\n\r\n"),
    ("bare LF after a chunk size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
    ("line end inside a quoted chunk extension", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"\r\nx\r\n\"\r\nx\r\n0\r\n\r\n"),
    ("chunk size of 16 digits", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000001\r\nx\r\n0\r\n\r\n"),
    ("obs-fold in a trailer", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n folded\r\n\r\n"),
    ("whitespace before a colon", b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n"),
    ("whitespace before the first field", b"GET / HTTP/1.1\r\n Host: x\r\n\r\n"),
    ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r2\r\n\r\n"),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\x002\r\n\r\n"),
    ("invalid character in a name", b"GET / HTTP/1.1\r\nHost: x\r\nX(A): 1\r\n\r\n"),
    ("asterisk-form for GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("authority-form for GET", b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("absolute-form with userinfo", b"GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("absolute-form without host", b"GET http:/// HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("fragment in the target", b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_never_reach_a_server() {
    init_tracing();
    let backend = HttpBackend::start("a", sa("127.24.1.11:8001")).await;
    let vip = sa("127.24.1.1:8000");
    let proxy = start(cluster(vec![service(
        "web",
        vip,
        Mode::Http,
        vec![server("a", backend.addr, 1)],
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;
    for (what, request) in REFUSED {
        let answer = exchange(vip, request).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{what}: {:?} -> {answer:?}",
            String::from_utf8_lossy(request)
        );
        assert!(!answer.contains("x-backend"), "{what}: {answer}");
        assert_eq!(
            backend.requests.load(Ordering::Relaxed),
            0,
            "{what}: reached the backend"
        );
    }
    // Too long: the request line alone (414), the head (431).
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 40 * 1024));
    let answer = exchange(vip, &long).await;
    assert!(answer.starts_with("HTTP/1.1 414 "), "{answer:?}");
    let mut long = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 40 * 1024));
    let answer = exchange(vip, &long).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    assert_eq!(backend.requests.load(Ordering::Relaxed), 0);
    // The accepted forms still go through: absolute-form (its authority replacing Host), OPTIONS *, a request
    // whose chunk extensions and trailer follow the grammar, HTTP/1.0 without Host.
    for (request, body) in [
        (&b"GET http://example.org/ HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"[..], "a"),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3 ; a=\"q\\\"\";b\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n", "a 3"),
        (b"GET / HTTP/1.0\r\n\r\n", "a"),
    ] {
        let answer = exchange(vip, request).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 ") && answer.ends_with(body),
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(backend.requests.load(Ordering::Relaxed), 4);
    proxy.shutdown().await;
}

/// A server answering every request with the response its path names.
async fn canned_backend(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = bind_retry(addr).await;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split(' ').nth(1).unwrap_or("");
                let response: &[u8] = match path {
                    "/both" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    "/te10" => b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    "/empty-te" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\nContent-Length: 2\r\n\r\nok",
                    "/after-chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
                    "/lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                    "/bad-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1 2\r\nx\r\n0\r\n\r\n",
                    "/gzip" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nzzz\r\n0\r\n\r\n",
                    _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                };
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_responses_are_refused_and_codings_kept() {
    init_tracing();
    let baddr = sa("127.24.2.11:8001");
    let backend = canned_backend(baddr).await;
    let vip = sa("127.24.2.1:8000");
    let proxy = start(cluster(vec![service(
        "web",
        vip,
        Mode::Http,
        vec![server("a", baddr, 1)],
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;
    for path in ["/both", "/te10", "/empty-te", "/after-chunked", "/lengths"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = exchange(vip, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 502 "), "{path} -> {answer:?}");
    }
    // A bad chunk in a response body: the bytes from it on are never sent.
    // (502 when the whole response came in one read, else the head went out and the body stops there.)
    let answer = exchange(
        vip,
        b"GET /bad-chunk HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 502 ") || answer.starts_with("HTTP/1.1 200 "),
        "{answer:?}"
    );
    assert!(!answer.contains("1 2\r\nx"), "{answer:?}");
    // `gzip, chunked`: relayed with its codings, not as plain chunked.
    let answer = exchange(
        vip,
        b"GET /gzip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    assert!(
        answer.contains("Transfer-Encoding: gzip, chunked\r\n"),
        "{answer:?}"
    );
    assert!(answer.ends_with("3\r\nzzz\r\n0\r\n\r\n"), "{answer:?}");
    backend.abort();
    proxy.shutdown().await;
}

/// The hyper engine refuses what hyper itself lets through: Host missing or repeated, codings other than exactly
/// chunked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_engine_refuses_host_and_coding_errors_too() {
    init_tracing();
    let backend = HttpBackend::start("a", sa("127.24.3.11:8001")).await;
    let vip = sa("127.24.3.1:8000");
    let proxy = Engine::Hyper.start(cluster(vec![service(
        "web",
        vip,
        Mode::Http,
        vec![server("a", backend.addr, 1)],
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;
    let mut refused = 0;
    for request in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = exchange(vip, request).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400 "),
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(request)
        );
        assert_eq!(backend.requests.load(Ordering::Relaxed), 0, "{answer}");
        refused += u64::from(!answer.is_empty());
    }
    let answer = exchange(
        vip,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("a 3"),
        "{answer:?}"
    );
    // Counted by class as they were answered (hyper's own refusals, before a request reaches us, are not).
    let codes = proxy.status().services[0].http_responses.unwrap();
    assert_eq!(codes[1], 1, "{codes:?}");
    assert!(codes[3] >= refused, "{codes:?}, {refused} refused");
    proxy.shutdown().await;
}
