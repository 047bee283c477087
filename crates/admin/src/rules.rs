//! Who may do what on which admin listener: the checks every request passes before routing.
//!
//! On the HTTP(S) listener:
//! - `Host` must be an IP literal (with optional port), `localhost`, or a name in `[admin]
//!   hostnames`, else 421: a page on an attacker's domain that re-resolves to this address (DNS
//!   rebinding) carries the attacker's name and is turned away.
//! - Any method other than GET/HEAD changes state: it is refused (403) with an `Origin` that is
//!   not this listener's own, refused (403) when no credentials are configured (the `tandem` CLI
//!   on the node uses the UNIX socket), needs the header `X-Requested-By` (403; a browser cannot
//!   send it cross-site without a CORS preflight, which is never granted), and valid credentials
//!   (401 with `WWW-Authenticate`, 429 while guesses are throttled).
//! - GETs other than `/metrics` need credentials when the listener is not on loopback.
//!
//! On the UNIX socket none of this applies: the socket file's permissions are the authentication.

use crate::auth::{Authenticator, Verdict};
use hyper::header::{AUTHORIZATION, HOST, ORIGIN};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use std::net::IpAddr;

/// The header a state-changing request must carry (any value).
pub const REQUESTED_BY: &str = "x-requested-by";

/// A refused request: the status and the message of the JSON error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// What the rules need to know about the HTTP(S) listener.
pub(crate) struct HttpRules {
    pub tls: bool,
    /// GETs (other than `/metrics`) need credentials: the listener is reachable off the node.
    pub reads_need_credentials: bool,
    /// Lower-case names accepted in `Host` besides IP literals and `localhost`.
    pub hostnames: Vec<String>,
    pub auth: Authenticator,
}

/// `Host` without its port (`[::1]:9080` → `::1`), or `None` when malformed.
fn host_name(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if after.is_empty() || after.strip_prefix(':').is_some_and(valid_port) {
            return Some(inside);
        }
        return None;
    }
    match host.rsplit_once(':') {
        Some((name, port)) if valid_port(port) => Some(name),
        Some(_) => None,
        None => Some(host),
    }
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

impl HttpRules {
    fn host_allowed(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost" || self.hostnames.contains(&name)
    }

    /// Checks one request head; `Ok` lets it through to routing.
    pub(crate) async fn admit(&self, parts: &Parts) -> Result<(), Refusal> {
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        if !self.host_allowed(host) {
            return Err(refuse(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {host:?} is not this node: use its IP address, or list the name in node.toml [admin] hostnames"
                ),
            ));
        }
        let reading = parts.method == Method::GET || parts.method == Method::HEAD;
        if reading {
            if parts.uri.path() == "/metrics" || !self.reads_need_credentials {
                return Ok(());
            }
            return self.authenticate(parts).await;
        }
        if let Some(origin) = parts.headers.get(ORIGIN) {
            let scheme = if self.tls { "https" } else { "http" };
            let own = format!("{scheme}://{host}");
            let same = origin
                .to_str()
                .is_ok_and(|origin| origin.eq_ignore_ascii_case(&own));
            if !same {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "refused: Origin {:?} is not this admin endpoint ({own})",
                        String::from_utf8_lossy(origin.as_bytes())
                    ),
                ));
            }
        }
        if !self.auth.configured() {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "state-changing requests over HTTP need credentials, and none are configured: \
                 use the `tandem` CLI on the node (it talks over the UNIX socket), or set [admin] user \
                 and password_file (`tandem password FILE`) in node.toml",
            ));
        }
        if !parts.headers.contains_key(REQUESTED_BY) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "refused: state-changing requests need the header X-Requested-By (any value)",
            ));
        }
        self.authenticate(parts).await
    }

    async fn authenticate(&self, parts: &Parts) -> Result<(), Refusal> {
        if !self.auth.configured() {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "this listener is reachable off the node and no credentials are configured: \
                 set [admin] user and password_file in node.toml",
            ));
        }
        let header = parts.headers.get(AUTHORIZATION).map(|h| h.as_bytes());
        match self.auth.check(header).await {
            Verdict::Granted => Ok(()),
            Verdict::Missing => Err(refuse(
                StatusCode::UNAUTHORIZED,
                "authentication required (HTTP basic, [admin] user and its password)",
            )),
            Verdict::Wrong => Err(refuse(StatusCode::UNAUTHORIZED, "wrong user or password")),
            Verdict::Throttled => Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins; try again in a minute",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_split_from_ports() {
        assert_eq!(host_name("127.0.0.1:9080"), Some("127.0.0.1"));
        assert_eq!(host_name("127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(host_name("[::1]:9080"), Some("::1"));
        assert_eq!(host_name("[::1]"), Some("::1"));
        assert_eq!(host_name("lb1.example:9443"), Some("lb1.example"));
        assert_eq!(host_name("[::1]x"), None);
        assert_eq!(host_name("a:b"), None);
        assert_eq!(host_name("a:123456"), None);
    }

    #[test]
    fn hosts_allowed_are_literals_localhost_and_listed_names() {
        let rules = HttpRules {
            tls: false,
            reads_need_credentials: false,
            hostnames: vec!["lb1.example".into()],
            auth: Authenticator::new(None),
        };
        for host in [
            "127.0.0.1:9080",
            "[::1]:9080",
            "192.168.1.21",
            "localhost:9080",
            "LB1.example:9443",
            "lb1.example.",
        ] {
            assert!(rules.host_allowed(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:9080",
            "lb1.example.evil",
            "::1",
        ] {
            assert!(!rules.host_allowed(host), "{host}");
        }
    }
}
