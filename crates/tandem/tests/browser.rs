#![allow(clippy::unwrap_used)]
//! The System Overview page in a real headless Chromium (Debian's `chromium`), driven over the
//! DevTools protocol as an operator would use it: a running `tandem run` on loopback with admin
//! credentials, the page opened with them, the services and servers rendered, a mouse click on
//! Drain answered in the page's confirmation, then the server drained on the page and in
//! `/api/status`; the page keeps refreshing across a daemon restart; and a screenshot.
//!
//! Without chromium the tests skip with a message, except in CI (`CI` set to `true`), where they
//! fail: `deploy/setup-debian.sh` installs chromium there.

mod common;

use base64::Engine;
use common::{KillOnDrop, banner_backend, output_with_input, tandem, terminate};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const ADMIN: &str = "127.0.0.1:29170";
const USER: &str = "ops";
const PASSWORD: &str = "browser-test-password";

/// Chromium's path (`TANDEM_CHROMIUM`, else `chromium` / `chromium-browser` / `google-chrome` on
/// PATH); `None` means skip, which CI does not allow.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("TANDEM_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .flat_map(|dir| {
                    ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
                })
                .find(|candidate| candidate.is_file())
        });
    if found.is_none() {
        let in_ci = std::env::var("CI").is_ok_and(|value| value == "true");
        assert!(
            !in_ci,
            "chromium is missing, and CI must run the browser test: deploy/setup-debian.sh installs it \
             (apt-get install chromium)"
        );
        // Straight to stderr, past the test harness's capture: a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: no chromium on PATH (apt-get install chromium, or set TANDEM_CHROMIUM); \
             the System Overview page was not tested in a browser"
        );
    }
    found
}

// ---- a DevTools protocol client: one page target over its websocket ----------------------

struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    page: WebSocket<TcpStream>,
    next_id: u64,
    /// What the "person" does when the browser asks for a user and password (HTTP basic).
    sign_in: SignIn,
    /// How often the browser asked.
    sign_in_asked: u32,
}

/// The answer to the browser's sign-in prompt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SignIn {
    Cancel,
    Give,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Browser.close ends every process of this browser; kill is the fallback.
        let _ = self.page.send(Message::text(
            json!({ "id": 0, "method": "Browser.close" }).to_string(),
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET over HTTP/1.1 (DevTools' own HTTP endpoint, which keeps the connection open and answers
/// with a Content-Length, and the admin API): the body, or `None` when nothing answers.
fn http_get(addr: &str, path: &str, authorization: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let auth = authorization.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = Vec::new();
    match length {
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body).ok()?;
        }
        None => {
            reader.read_to_end(&mut body).ok()?;
        }
    }
    String::from_utf8(body).ok()
}

impl Browser {
    fn launch(chromium: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Chromium prints "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID".
        let stderr = child.stderr.take().unwrap();
        // Until the page is attached, a failure must not leave the browser running.
        let mut child = KillOnDrop(Some(child));
        let (found, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.to_owned());
                    sent = true;
                }
            }
        });
        let url = listening
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not open its DevTools port within 30 s");
        let port: &str = url
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap();
        let devtools = format!("127.0.0.1:{port}");
        let targets: Value = serde_json::from_str(
            &http_get(&devtools, "/json/list", None).expect("DevTools /json/list"),
        )
        .unwrap();
        let page_url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|target| target["type"] == "page")
            .and_then(|target| target["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let stream = TcpStream::connect(&devtools).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let (page, _) = tungstenite::client(page_url.as_str(), stream).unwrap();
        let mut browser = Browser {
            child: child.0.take().unwrap(),
            _profile: profile,
            page,
            next_id: 1,
            sign_in: SignIn::Cancel,
            sign_in_asked: 0,
        };
        browser.call("Page.enable", json!({}));
        // The API's requests pass through here, so that a 401 challenge reaches the test as the
        // sign-in prompt a person would see (Fetch.authRequired).
        browser.call(
            "Fetch.enable",
            json!({ "handleAuthRequests": true, "patterns": [{ "urlPattern": "*/api/*" }] }),
        );
        browser.call("Network.enable", json!({}));
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    /// One DevTools command and its result (events that arrive meanwhile are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.page
            .send(Message::text(
                json!({ "id": id, "method": method, "params": params }).to_string(),
            ))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method} in 30 s");
            let message = match self.page.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(error))
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(error) => panic!("DevTools connection: {error}"),
            };
            let Message::Text(body) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(body.as_str()).unwrap();
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {}", answer["error"]);
                return answer["result"].clone();
            }
            self.on_event(&answer);
        }
    }

    /// Sends a command without waiting for its answer (answers to events).
    fn send(&mut self, method: &str, params: Value) {
        let id = self.next_id;
        self.next_id += 1;
        self.page
            .send(Message::text(
                json!({ "id": id, "method": method, "params": params }).to_string(),
            ))
            .unwrap();
    }

    /// Paused API requests go on; the sign-in prompt is answered as `sign_in` says.
    fn on_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Fetch.requestPaused") => {
                self.send(
                    "Fetch.continueRequest",
                    json!({ "requestId": params["requestId"] }),
                );
            }
            Some("Fetch.authRequired") => {
                self.sign_in_asked += 1;
                let response = match self.sign_in {
                    SignIn::Cancel => json!({ "response": "CancelAuth" }),
                    SignIn::Give => json!({ "response": "ProvideCredentials",
                                            "username": USER, "password": PASSWORD }),
                };
                self.send(
                    "Fetch.continueWithAuth",
                    json!({ "requestId": params["requestId"], "authChallengeResponse": response }),
                );
            }
            _ => {}
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy (bounded); returns its value.
    fn wait_for(&mut self, expression: &str, what: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(expression);
            if !(value.is_null() || value == false || value == "" || value == 0) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; page text:\n{}",
                self.eval("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// A left click with the mouse in the middle of the element `selector` matches.
    fn click(&mut self, selector: &str) {
        let place = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        assert!(place.is_array(), "nothing to click at {selector}");
        let (x, y) = (place[0].as_f64().unwrap(), place[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    fn screenshot(&mut self, file: &Path) -> usize {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        std::fs::write(file, &png).unwrap();
        png.len()
    }
}

// ---- the daemon -----------------------------------------------------------------------------

const CLUSTER: &str = r#"[cluster]
name = "browser-test"
[health_check]
interval_ms = 100
rise = 1
fall = 2
[[service]]
label = "db"
vip = "127.0.0.170"
ports = [23170]
mode = "tcp"
persistence = { mode = "last-successful", timeout_s = 0, table_size = 1000 }
[[service.server]]
label = "ctl-1"
address = "127.0.0.171"
port = 23170
[[service.server]]
label = "ctl-2"
address = "127.0.0.172"
port = 23170
[[service]]
label = "web"
vip = "127.0.0.170"
ports = [23171]
mode = "http"
[[service.server]]
label = "www-1"
address = "127.0.0.173"
port = 23171
"#;

struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Daemon {
    fn setup() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("cluster.toml"), CLUSTER).unwrap();
        let password = output_with_input(
            tandem().arg("password").arg(d.join("admin.pw")),
            &format!("{PASSWORD}\n"),
        );
        assert!(
            password.status.success(),
            "tandem password failed: {}",
            String::from_utf8_lossy(&password.stderr)
        );
        std::fs::write(
            d.join("node.toml"),
            format!(
                "[node]\nname = \"solo\"\nrole = \"primary\"\ninterface = \"lo\"\naddress = \"127.0.0.1\"\n\
                 heartbeat_port = 26170\nsync_port = 27170\nmanage_vips = false\nstate_dir = \"{dir}/state\"\n\
                 [admin]\nlisten = \"{ADMIN}\"\nsocket = \"{dir}/admin.sock\"\nuser = \"{USER}\"\n\
                 password_file = \"admin.pw\"\n[tuning]\nworkers = 1\nheartbeat_realtime = false\n",
                dir = d.display()
            ),
        )
        .unwrap();
        Daemon { child: None, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Starts `tandem run` and waits until it is active with every server up.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        self.child = Some(
            tandem()
                .arg("run")
                .arg("--config-dir")
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.status() {
                let up = status["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|service| service["servers"].as_array().into_iter().flatten())
                    .filter(|server| server["health"] == "up")
                    .count();
                if status["node"]["state"] == "active" && up == 3 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take()
            && terminate(&mut child).is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `/api/status` over the admin listener, with the credentials; `None` while it does not answer.
    fn status(&self) -> Option<Value> {
        serde_json::from_str(&http_get(ADMIN, "/api/status", Some(&authorization()))?).ok()
    }
}

fn authorization() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

fn server<'a>(status: &'a Value, service: &str, server: &str) -> &'a Value {
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == service)
        .and_then(|s| s["servers"].as_array())
        .and_then(|servers| servers.iter().find(|s| s["label"] == server))
        .unwrap_or(&Value::Null)
}

/// The text of the admin-state cell of one server row on the page.
fn admin_cell(service: &str, server: &str) -> String {
    format!(
        "(document.querySelector('tr.server[data-service=\"{service}\"][data-server=\"{server}\"] td.admin') \
         || {{}}).textContent || ''"
    )
}

#[test]
fn the_page_shows_a_running_daemon_and_drains_a_server_with_a_click() {
    let Some(chromium) = chromium() else { return };
    let started = Instant::now();
    let _backends = [
        banner_backend("127.0.0.171:23170", "ctl-1"),
        banner_backend("127.0.0.172:23170", "ctl-2"),
        banner_backend("127.0.0.173:23171", "www-1"),
    ];
    let mut daemon = Daemon::setup();
    daemon.start();
    let mut browser = Browser::launch(&chromium);

    // Reads need no credentials on loopback: the page shows everything. An action makes the
    // browser ask to sign in; cancelled, the page says why nothing happened.
    browser.navigate(&format!("http://{ADMIN}/"));
    browser.wait_for(
        "document.querySelectorAll('tr.server').length === 3",
        "three server rows",
        Duration::from_secs(15),
    );
    let drain = "button[data-action=drain][data-service=db][data-server=ctl-1]";
    browser.click(drain);
    browser.wait_for(
        "!document.getElementById('confirm').hidden",
        "the confirmation for Drain",
        Duration::from_secs(5),
    );
    browser.click("#confirm-ok");
    let refused = browser.wait_for(
        "!document.getElementById('notice').hidden && document.getElementById('notice').textContent",
        "the refusal shown",
        Duration::from_secs(10),
    );
    assert!(
        refused.as_str().unwrap().starts_with("Not signed in: "),
        "{refused}"
    );
    assert_eq!(
        daemon.status().unwrap()["services"][0]["servers"][0]["admin_state"],
        "online"
    );

    assert_eq!(browser.sign_in_asked, 1, "the browser asked to sign in");

    // From now on the person signs in when the browser asks.
    browser.sign_in = SignIn::Give;
    browser.eval("document.getElementById('notice').hidden = true");
    // A POST without the page's X-Requested-By header is refused (what a cross-site form would send).
    let csrf = browser.eval("fetch('/api/reload', {method: 'POST'}).then(r => r.status)");
    assert_eq!(csrf, 403);
    // A marker that a page reload would lose: every later check also proves no reload happened.
    browser.eval("window.notReloaded = true");
    let services =
        browser.eval("[...document.querySelectorAll('tr.service .label')].map(e => e.textContent)");
    assert_eq!(services, json!(["db", "web"]));
    let rows = browser.eval(
        "[...document.querySelectorAll('tr.server')].map(r => [r.dataset.service, r.dataset.server, \
         r.querySelector('td.health .badge').textContent, r.querySelector('td.admin .badge').textContent, \
         r.children[1].textContent])",
    );
    assert_eq!(
        rows,
        json!([
            ["db", "ctl-1", "up", "online", "127.0.0.171"],
            ["db", "ctl-2", "up", "online", "127.0.0.172"],
            ["web", "www-1", "up", "online", "127.0.0.173"]
        ])
    );
    let local = browser.eval("document.getElementById('node-local').innerText");
    let local = local.as_str().unwrap();
    assert!(
        local.contains("solo") && local.contains("ACTIVE"),
        "{local}"
    );
    assert!(local.contains("primary"), "{local}");
    let peer = browser.eval("document.getElementById('node-peer').innerText");
    assert!(peer.as_str().unwrap().contains("Standalone"), "{peer}");
    let health = browser.eval("document.querySelector('tr.server td.health').textContent");
    assert!(health.as_str().unwrap().starts_with("up for "), "{health}");
    let service_row =
        browser.eval("document.querySelector('tr.service[data-service=\"db\"]').innerText");
    assert!(
        service_row.as_str().unwrap().contains("2/2 UP")
            && service_row.as_str().unwrap().contains("stick table 0/1000"),
        "{service_row}"
    );

    // It refreshes from /api/status with the page's credentials, in place: the rows and buttons
    // are the same DOM nodes after two refreshes (nothing is rebuilt, so nothing flickers).
    browser.eval(
        "window.row = document.querySelector('tr.server[data-server=\"ctl-2\"]'); \
         window.button = window.row.querySelector('button[data-action=drain]'); window.refreshes = 0; \
         new MutationObserver(() => window.refreshes++).observe(document.getElementById('refreshed'), \
         {childList: true, characterData: true, subtree: true}); true",
    );
    browser.wait_for(
        "document.getElementById('refreshed').textContent.startsWith('updated') && window.refreshes >= 2",
        "two refreshes from /api/status",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.eval(
            "window.row === document.querySelector('tr.server[data-server=\"ctl-2\"]') && window.row.isConnected \
             && window.button === window.row.querySelector('button[data-action=drain]')"
        ),
        true,
        "the refresh rebuilt the rows"
    );

    // Halt asked and cancelled: nothing changes.
    browser.click("button[data-action=halt][data-service=db][data-server=ctl-2]");
    browser.wait_for(
        "!document.getElementById('confirm').hidden",
        "the confirmation for Halt",
        Duration::from_secs(5),
    );
    browser.click("#confirm-cancel");
    assert_eq!(
        browser.eval("document.getElementById('confirm').hidden"),
        true
    );

    // Drain with the mouse, confirmed in the page's dialog.
    browser.click(drain);
    let question = browser.wait_for(
        "!document.getElementById('confirm').hidden && document.getElementById('confirm-text').textContent",
        "the confirmation for Drain",
        Duration::from_secs(5),
    );
    assert!(
        question.as_str().unwrap().starts_with("Drain ctl-1 of db?"),
        "{question}"
    );
    browser.click("#confirm-ok");
    let cell = browser.wait_for(
        &format!(
            "(t => t.includes('drain') && t)({})",
            admin_cell("db", "ctl-1")
        ),
        "ctl-1 drained on the page",
        Duration::from_secs(10),
    );
    assert!(
        cell.as_str()
            .unwrap()
            .contains("set by an operator on solo at "),
        "{cell}"
    );
    let notice = browser.eval("document.getElementById('notice').textContent");
    assert!(!notice.as_str().unwrap().is_empty(), "no answer shown");
    assert_eq!(
        browser.eval(&format!("document.querySelector('{drain}').disabled")),
        true
    );
    assert!(
        browser
            .eval(&admin_cell("db", "ctl-2"))
            .as_str()
            .unwrap()
            .contains("online")
    );

    // ... and in the API.
    let status = daemon.status().unwrap();
    assert_eq!(server(&status, "db", "ctl-1")["admin_state"], "drain");
    assert_eq!(
        server(&status, "db", "ctl-1")["admin_source"]["via"],
        "operator"
    );
    assert_eq!(server(&status, "db", "ctl-2")["admin_state"], "online");

    // Reload from the header, confirmed: the node's answer shows.
    browser.eval("document.getElementById('notice').hidden = true");
    browser.click("header button[data-action=reload]");
    let question = browser.wait_for(
        "!document.getElementById('confirm').hidden && document.getElementById('confirm-text').textContent",
        "the confirmation for Reload",
        Duration::from_secs(5),
    );
    assert!(
        question.as_str().unwrap().starts_with("Reload on solo?"),
        "{question}"
    );
    browser.click("#confirm-ok");
    let answer = browser.wait_for(
        "!document.getElementById('notice').hidden && document.getElementById('notice').className === 'good' \
         && document.getElementById('notice').textContent",
        "the reload's answer",
        Duration::from_secs(10),
    );
    assert!(!answer.as_str().unwrap().is_empty());

    // The daemon restarts: the page says the node does not answer, then carries on, showing the
    // drain restored from state_dir, without a reload.
    daemon.stop();
    browser.wait_for(
        "document.getElementById('refreshed').textContent.includes('not answering')",
        "the page noticing the daemon is gone",
        Duration::from_secs(15),
    );
    assert_eq!(
        browser.eval("document.getElementById('app').classList.contains('stale')"),
        true
    );
    daemon.start();
    browser.wait_for(
        &format!(
            "document.getElementById('refreshed').textContent.startsWith('updated') && \
             (t => t.includes('restored from state_dir') && t)({})",
            admin_cell("db", "ctl-1")
        ),
        "the page back after the restart",
        Duration::from_secs(15),
    );
    assert_eq!(browser.eval("window.notReloaded === true"), true);

    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("system-overview-browser-test.png");
    let size = browser.screenshot(&file);
    assert!(size > 20_000, "screenshot of {size} bytes");
    eprintln!(
        "browser test: screenshot {} ({size} bytes), {:.1} s",
        file.display(),
        started.elapsed().as_secs_f64()
    );
}

/// A document the daemon cannot easily be brought into (a peer out of sync, both active, a TLS service not served
/// as configured, a label full of markup), rendered by the real page from a file: the warnings show and the label stays
/// text.
#[test]
fn the_page_warns_of_split_brain_and_config_mismatch_and_keeps_labels_as_text() {
    let Some(chromium) = chromium() else { return };
    let hostile = "<img src=x onerror=\"window.pwned=1\">db";
    let status: tandem_status::Status = serde_json::from_value(json!({
        "node": { "name": "lb1", "role": "primary", "address": "192.168.1.21",
                  "state": "active", "state_since_ms": 65_000, "fault": null, "ping": "notconfigured",
                  "manage_vips": true, "interface": "eth0", "vips": ["192.168.1.250"],
                  "vips_held": ["192.168.1.250"], "uptime_s": 600,
                  "vip_conflicts": { "check_ms": 1000, "probes_sent": 9, "in_conflict": 1,
                      "vips": [ { "vip": "192.168.1.250", "detected": 1, "current": true,
                          "claimants": [ { "mac": "02:7e:00:00:01:66", "kind": "arp-reply",
                              "first_seen_unix_ms": 1, "last_seen_unix_ms": 2, "last_seen_age_ms": 400,
                              "frames": 3, "current": true } ] } ] },
                  "peer": { "name": "lb2", "address": "192.168.1.22", "role": "secondary",
                            "state": "active", "alive": true, "last_heard_ms": 120, "state_since_ms": 61_000,
                            "holds_vips": true, "config_generation": 4, "config_digest": "bbbbbbbbbbbbbbbb",
                            "servers_up": 0, "servers_total": 1 } },
        "config": { "generation": 3, "digest": "aaaaaaaaaaaaaaaa", "sync": "config out of sync: peer runs generation 4",
                    "not_applied": ["TLS service \"horizon\" is not served: horizon.pem: cannot read"],
                    "not_applied_services": ["horizon"] },
        "cluster": { "takeovers": 1, "releases": 0, "split_brains": 1, "warn_time_exceeded": 0,
                     "vip_failures": 0, "last_event": "took over: peer dead",
                     "heartbeats": { "sent": 1, "send_errors": 0, "received": 1, "rejected": {} } },
        "replication": null,
        "services": [ { "label": hostile, "vip": "192.168.1.250", "ports": [3306], "mode": "tcp",
            "balance": "round-robin",
            "persistence": { "mode": "source-ip", "timeout_s": 600, "table_size": 100, "cookie_name": "" },
            "current_connections": 0, "total_connections": 0, "bytes_in": 0, "bytes_out": 0, "failures": 7,
            "bind_errors": [], "stick_table_size": 100,
            "traffic": { "stick_table_capacity": 100, "stick_table_evictions": 12,
                         "http_responses": { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0 },
                         "response_seconds": { "le": [], "cumulative": [], "count": 0, "sum_seconds": 0.0 },
                         "connect_seconds": { "le": [], "cumulative": [], "count": 0, "sum_seconds": 0.0 },
                         "access_log_lines": 0, "access_log_dropped": 0 },
            "servers": [ { "label": "s1", "address": "192.168.1.150", "port": null,
                "weight": 100, "health": "down", "health_reason": "connect refused", "admin_state": "online",
                "admin_source": null, "current_connections": 0, "total_connections": 0, "bytes_in": 0,
                "bytes_out": 0, "check_failures": 3, "connect_failures": 1, "idle_connections": 0,
                "last_check": null } ] } ]
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("overview.html");
    std::fs::write(&file, tandem_admin::render_overview(&status)).unwrap();
    let mut browser = Browser::launch(&chromium);
    browser.navigate(&format!("file://{}", file.display()));
    let banners = browser.wait_for(
        "document.getElementById('banners') && document.getElementById('banners').innerText",
        "the warnings",
        Duration::from_secs(10),
    );
    let banners = banners.as_str().unwrap();
    assert!(
        banners.contains("Both nodes are active (split brain)."),
        "{banners}"
    );
    assert!(banners.contains("Config out of sync."), "{banners}");
    assert!(banners.contains("Not served as configured:"), "{banners}");
    assert!(
        banners.contains(
            "TLS service \"horizon\" is not served: horizon.pem: cannot read (fix it, then reload this node)."
        ),
        "{banners}"
    );
    assert!(
        banners.contains("VIP 192.168.1.250 is claimed by another machine (02:7e:00:00:01:66)."),
        "{banners}"
    );
    let local = browser.eval("document.getElementById('node-local').innerText");
    assert!(
        local
            .as_str()
            .unwrap()
            .contains("192.168.1.250 claimed by 02:7e:00:00:01:66"),
        "{local}"
    );
    assert!(
        banners.contains("generation 3, digest aaaaaaaaaaaa; lb2: generation 4"),
        "{banners}"
    );
    assert!(banners.contains("Every server of <img"), "{banners}");
    let peer = browser.eval("document.getElementById('node-peer').innerText");
    assert!(
        peer.as_str().unwrap().contains("(differs from this node)"),
        "{peer}"
    );
    assert!(
        peer.as_str().unwrap().contains("active for 1 min 1 s"),
        "{peer}"
    );
    assert!(
        peer.as_str().unwrap().contains("192.168.1.250"),
        "holds the VIPs: {peer}"
    );
    // The label is text: no element was made of it and its handler never ran.
    assert_eq!(
        browser.eval("document.querySelectorAll('main img').length"),
        0
    );
    assert_eq!(browser.eval("window.pwned === undefined"), true);
    let service = browser.eval("document.querySelector('tr.service').innerText");
    assert!(
        service
            .as_str()
            .unwrap()
            .contains("stick table 100/100, 12 evicted, expiry 600 s"),
        "{service}"
    );
    let label = browser.eval("document.querySelector('tr.service .label').textContent");
    assert_eq!(label, hostile);
    let server = browser.eval("document.querySelector('tr.server').innerText");
    let server = server.as_str().unwrap();
    assert!(
        server.contains("connect refused") && server.contains("client's port"),
        "{server}"
    );
    // A page away from its node (here a file) says so and keeps what it showed.
    browser.wait_for(
        "document.getElementById('refreshed').textContent.includes('not answering')",
        "the not-answering notice",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('tr.server').length"),
        1
    );
}
