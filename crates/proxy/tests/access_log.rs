//! The access log end to end: real HTTP requests and TCP connections through the proxy (native HTTP engine, TCP on
//! the relay the environment asks for), one line each in the documented format, a skipped service silent; and the
//! response classes, latency histograms and retry counters the same traffic leaves in the status.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tandem_config::AccessLogPath;
use tandem_config::model::Mode;
use tandem_proxy::AccessLog;

/// The file's lines once it holds at least `n` (bounded wait).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "access log has {} lines, want {n}:\n{text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A line split into its fields: the quoted request line (HTTP) stays one field.
fn fields(line: &str) -> Vec<String> {
    let (head, request) = match line.split_once(" \"") {
        Some((h, r)) => (h, Some(r.trim_end_matches('"'))),
        None => (line, None),
    };
    let mut f: Vec<String> = head.split(' ').map(str::to_string).collect();
    f.extend(request.map(str::to_string));
    f
}

/// `Tc/Tr/Ta` or `Tc/Tt` as numbers.
fn timings(field: &str) -> Vec<i64> {
    field.split('/').map(|t| t.parse().unwrap()).collect()
}

fn assert_date(field: &str) {
    // [06/Dec/2026:16:05:57.123]
    assert!(
        field.len() == 26 && field.starts_with('[') && field.ends_with(']'),
        "{field}"
    );
    assert_eq!(&field[3..4], "/");
    assert_eq!(&field[12..13], ":");
    assert_eq!(&field[21..22], ".");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_request_and_connection() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::start(
        AccessLogPath::File(path.clone()),
        1024,
        vec!["quiet".into()],
    )
    .unwrap();
    let a = HttpBackend::start("a", sa("127.25.1.11:8001")).await;
    let t = Backend::start("t", sa("127.25.1.12:8002")).await;
    let (web, db, quiet, empty) = (
        sa("127.25.1.1:8000"),
        sa("127.25.1.2:8000"),
        sa("127.25.1.3:8000"),
        sa("127.25.1.4:8000"),
    );
    let proxy = start_logged(
        cluster(vec![
            service("web", web, Mode::Http, vec![server("a", a.addr, 1)]),
            service("db", db, Mode::Tcp, vec![server("t", t.addr, 1)]),
            service("quiet", quiet, Mode::Http, vec![server("a", a.addr, 1)]),
            // Nothing listens there: never up, every request a 503.
            service(
                "empty",
                empty,
                Mode::Http,
                vec![server("gone", sa("127.25.1.13:8003"), 1)],
            ),
        ]),
        Some(log),
    );
    for label in ["web", "db", "quiet"] {
        wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, label)).await;
    }

    let mut c = HttpClient::connect(web).await;
    assert_eq!(c.get("/hello?x=1", &[]).await.status, 200);
    let r = c.request("POST", "/up", &[], b"0123456789".to_vec()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        HttpClient::connect(quiet).await.get("/", &[]).await.status,
        200
    );
    assert_eq!(
        HttpClient::connect(empty).await.get("/x", &[]).await.status,
        503
    );
    assert_eq!(who(db).await.unwrap(), "t");

    let all = lines(&path, 4).await;
    // Let anything late arrive, then make sure there is nothing more (the skipped service wrote nothing).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = lines(&path, all.len()).await;
    eprintln!("{}", all.join("\n"));
    assert_eq!(all.len(), 4, "{all:#?}");
    assert!(!all.iter().any(|l| l.contains("quiet")), "{all:#?}");
    let of = |needle: &str| -> Vec<String> {
        all.iter()
            .find(|l| l.contains(needle))
            .map(|l| fields(l))
            .unwrap_or_else(|| panic!("no line with {needle}: {all:#?}"))
    };

    // HTTP: CLIENT:PORT [DATE] VIP:PORT SERVICE/SERVER Tc/Tr/Ta STATUS BYTES_OUT BYTES_IN "REQUEST"
    let get = of("GET /hello");
    assert_eq!(get.len(), 9, "{get:?}");
    assert!(get[0].starts_with("127.0.0.1:"), "{get:?}");
    assert_date(&get[1]);
    assert_eq!(get[2], "127.25.1.1:8000");
    assert_eq!(get[3], "web/a");
    let t = timings(&get[4]);
    assert!(t[0] >= 0, "a new upstream connection: Tc {t:?}");
    assert!(t[1] >= 0 && t[2] >= t[1], "{t:?}");
    assert_eq!(get[5], "200");
    assert!(get[6].parse::<u64>().unwrap() > 20, "{get:?}");
    assert!(get[7].parse::<u64>().unwrap() > 20, "{get:?}");
    assert_eq!(get[8], "GET /hello?x=1 HTTP/1.1");

    let post = of("POST /up");
    let t = timings(&post[4]);
    assert_eq!(t[0], -1, "the pooled connection was reused: no connect");
    assert!(t[1] >= 0, "{t:?}");
    assert_eq!(post[5], "200");
    let get_in: u64 = get[7].parse().unwrap();
    assert!(post[7].parse::<u64>().unwrap() >= 10 + 20, "{post:?}");
    assert!(
        post[7].parse::<u64>().unwrap() < get_in + 200,
        "only this request's bytes: {post:?}"
    );

    let none = of("GET /x");
    assert_eq!(none[3], "empty/<NOSRV>");
    let t = timings(&none[4]);
    assert_eq!((t[0], t[1]), (-1, -1), "{none:?}");
    assert_eq!(none[5], "503");

    // TCP: CLIENT:PORT [DATE] VIP:PORT SERVICE/SERVER Tc/Tt BYTES_OUT BYTES_IN END
    let tcp = of("db/t");
    assert_eq!(tcp.len(), 8, "{tcp:?}");
    assert!(tcp[0].starts_with("127.0.0.1:"));
    assert_date(&tcp[1]);
    assert_eq!(tcp[2], "127.25.1.2:8000");
    let t = timings(&tcp[4]);
    assert!(t[0] >= 0 && t[1] >= t[0], "{t:?}");
    assert_eq!(tcp[5], "2", "the backend's name line: {tcp:?}");
    assert_eq!(tcp[6], "0");
    assert_eq!(tcp[7], "--");

    // The same traffic in the status: classes, histograms, log counts.
    let st = proxy.status();
    let svc = |label: &str| st.services.iter().find(|s| s.label == label).unwrap();
    assert_eq!(svc("web").http_responses, Some([0, 2, 0, 0, 0, 0]));
    assert_eq!(svc("empty").http_responses, Some([0, 0, 0, 0, 1, 0]));
    assert_eq!(svc("db").http_responses, None);
    assert_eq!(svc("web").response_time.as_ref().unwrap().count, 2);
    assert_eq!(svc("web").connect_time.count, 1);
    assert_eq!(svc("db").connect_time.count, 1);
    assert_eq!(svc("web").access_log_lines, 2);
    assert_eq!(svc("quiet").access_log_lines, 0);
    assert_eq!(svc("web").access_log_dropped, 0);
    assert_eq!(svc("empty").failures, 1);
}

/// A connect that fails is retried on the other server and counted there; the line names the server that answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_counted_on_the_server_that_failed() {
    init_tracing();
    let a = HttpBackend::start("a", sa("127.25.2.11:8001")).await;
    let b = HttpBackend::start("b", sa("127.25.2.12:8001")).await;
    let web = sa("127.25.2.1:8000");
    let proxy = start(cluster(vec![service(
        "web",
        web,
        Mode::Http,
        vec![server("a", a.addr, 1), server("b", b.addr, 1)],
    )]));
    wait_for(&proxy, Duration::from_secs(5), "up", |s| all_up(s, "web")).await;
    // a stops listening; until its checks notice, requests balanced to it fail to connect and move to b.
    a.kill();
    let mut moved = 0;
    for _ in 0..20 {
        let r = HttpClient::connect(web).await.get("/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "b");
        let st = proxy.status();
        moved = st.services[0].servers[0].retries;
        if moved > 0 || st.services[0].servers[0].health == "down" {
            break;
        }
    }
    let st = proxy.status();
    let srv = &st.services[0].servers;
    assert!(moved > 0, "no request was balanced to a while it was gone");
    assert_eq!(
        moved, srv[0].connect_failures,
        "every failed connect here was retried on b"
    );
    assert_eq!(srv[1].retries, 0);
}
