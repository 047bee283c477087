//! HTTP mode edge cases, on both engines: curl (a client no one here wrote) for HTTP/1.0, HEAD, chunked uploads and
//! `Expect: 100-continue`; chunked responses; pipelined requests; a server that answers before reading the body;
//! request smuggling attempts refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use tandem_config::model::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn curl(args: Vec<String>) -> (String, String) {
    let curl = require_binary("curl");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(curl)
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads one response (head + Content-Length body) from a raw stream; returns (head, body).
async fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while pending.len() < end + 4 + len {
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "closed inside the body");
                pending.extend_from_slice(&buf[..n]);
            }
            let body = pending[end + 4..end + 4 + len].to_vec();
            pending.drain(..end + 4 + len);
            return (head, body);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Backend "a" on 127.23.NET.11:8001 behind HTTP service "web" on 127.23.NET.1:8000, up.
async fn one_server(
    e: Engine,
    net: u8,
) -> (HttpBackend, std::net::SocketAddr, tandem_proxy::Proxy) {
    let a = HttpBackend::start("a", e.sa(&format!("127.23.{net}.11:8001"))).await;
    let vip = e.sa(&format!("127.23.{net}.1:8000"));
    let proxy = e.start(cluster(vec![service(
        "web",
        vip,
        Mode::Http,
        vec![server("a", a.addr, 1)],
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;
    (a, vip, proxy)
}

async fn curl_clients_http10_head_chunked_and_expect(e: Engine) {
    init_tracing();
    let (_backend, vip, proxy) = one_server(e, 1).await;
    let url = format!("http://{vip}");

    // HTTP/1.0 client.
    let (body, _) = curl(vec!["--http1.0".into(), format!("{url}/")]).await;
    assert_eq!(body, "a");
    // HEAD: headers only, the length of what GET would send.
    let (head, _) = curl(vec!["-I".into(), format!("{url}/big/12345")]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 12345"),
        "{head}"
    );
    // A chunked response (no length from the server), read to the end.
    let (body, _) = curl(vec![format!("{url}/chunked/250000")]).await;
    assert_eq!(body.len(), 250_000);
    assert!(body.bytes().all(|b| b == b'c'));

    // Uploads: chunked, and with `Expect: 100-continue` (curl waits for the 100 before sending).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload");
    std::fs::write(&file, vec![b'u'; 2_000_000]).unwrap();
    let (body, _) = curl(vec![
        "-H".into(),
        "Transfer-Encoding: chunked".into(),
        "--data-binary".into(),
        format!("@{}", file.display()),
        format!("{url}/upload"),
    ])
    .await;
    assert_eq!(body, "a 2000000");
    let (body, err) = curl(vec![
        "-v".into(),
        "-H".into(),
        "Expect: 100-continue".into(),
        "--data-binary".into(),
        format!("@{}", file.display()),
        format!("{url}/upload"),
    ])
    .await;
    assert_eq!(body, "a 2000000");
    assert!(
        err.contains("HTTP/1.1 100"),
        "no 100 Continue seen by curl: {err}"
    );
    proxy.shutdown().await;
}

async fn pipelined_requests_are_answered_in_order(e: Engine) {
    init_tracing();
    let (_backend, vip, proxy) = one_server(e, 2).await;
    let mut s = TcpStream::connect(vip).await.unwrap();
    s.write_all(
        b"GET /big/3 HTTP/1.1\r\nHost: x\r\n\r\nPOST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /big/7 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    let (h1, b1) = read_response(&mut s, &mut pending).await;
    let (h2, b2) = read_response(&mut s, &mut pending).await;
    let (h3, b3) = read_response(&mut s, &mut pending).await;
    assert!(
        h1.starts_with("HTTP/1.1 200")
            && h2.starts_with("HTTP/1.1 200")
            && h3.starts_with("HTTP/1.1 200")
    );
    assert_eq!(
        (b1, b2, b3),
        (b"xxx".to_vec(), b"a 5".to_vec(), b"xxxxxxx".to_vec())
    );
    proxy.shutdown().await;
}

async fn smuggling_attempts_are_refused(e: Engine) {
    init_tracing();
    let (a, vip, proxy) = one_server(e, 3).await;
    let both_lengths = &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..];
    // hyper follows RFC 9112 6.3 for that one (chunked wins, the length is dropped, the rest is the next request):
    // not ambiguous upstream either, but the native engine refuses it outright, as HAProxy does.
    let attacks = [
        both_lengths,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    ];
    for attack in attacks.into_iter().skip(usize::from(e == Engine::Hyper)) {
        let mut s = TcpStream::connect(vip).await.unwrap();
        s.write_all(attack).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        // A 400, or (hyper engine, for some) a plain close: never a response from the backend to a smuggled request.
        // (hyper streams request bodies: a bad chunk found mid-way ends in 502, the head having gone upstream.)
        let hyper_late = e == Engine::Hyper && text.starts_with("HTTP/1.1 502");
        assert!(
            out.is_empty() || text.starts_with("HTTP/1.1 400") || hyper_late,
            "{:?} -> {text}",
            String::from_utf8_lossy(attack)
        );
        assert!(!text.contains("x-backend"), "{text}");
    }
    if e == Engine::Native {
        let reached = a.requests.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(reached, 0, "nothing reached the backend");
    }
    proxy.shutdown().await;
}

async fn early_response_before_the_body_is_read(e: Engine) {
    init_tracing();
    // A server that answers 413 as soon as it has the head, without reading the body, then closes.
    let baddr = e.sa("127.23.4.11:8001");
    let listener = bind_retry(baddr).await;
    let backend = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    let vip = e.sa("127.23.4.1:8000");
    let proxy = e.start(cluster(vec![service(
        "up",
        vip,
        Mode::Http,
        vec![server("a", baddr, 1)],
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "up")).await;
    let mut s = TcpStream::connect(vip).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (head, body) = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(body, b"too big!");
    backend.abort();
    proxy.shutdown().await;
}

on_both_engines!(
    curl_clients_http10_head_chunked_and_expect,
    pipelined_requests_are_answered_in_order,
    smuggling_attempts_are_refused,
    early_response_before_the_body_is_read,
);
