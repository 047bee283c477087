//! The CLI side of the admin API: finds the running node and sends it one request.
//!
//! On the node the CLI talks over the local UNIX socket (`[admin] socket` of `node.toml`): no
//! credentials, the socket's permissions decide. When the socket is absent or closed to this
//! user it uses `[admin] listen`; `--admin URL` forces HTTP(S) for remote use. Over HTTP(S) it
//! sends `X-Requested-By: tandem-cli` and, when given (`TANDEM_ADMIN_USER` and
//! `TANDEM_ADMIN_PASSWORD`, or a prompt after a 401 on a terminal), basic credentials. HTTPS is
//! checked against a pinned fingerprint (`--admin-fingerprint`), not at all (`--insecure`), the
//! node's own self-signed certificate when readable, or else the system's roots.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_status::Status;
use tokio::io::{AsyncRead, AsyncWrite};

/// How the CLI was told to reach the node.
#[derive(Debug, Default, Clone)]
pub struct AdminArgs {
    /// `--admin URL`.
    pub url: Option<String>,
    /// `--admin-fingerprint SHA256`.
    pub fingerprint: Option<String>,
    /// `--insecure`.
    pub insecure: bool,
}

enum Transport {
    Socket(PathBuf),
    Http {
        /// `host:port` as written (the `Host` header too).
        authority: String,
        tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    },
}

/// Where and how to reach a node's admin endpoint.
pub struct AdminTarget {
    transport: Transport,
    /// What error messages call it.
    pub description: String,
    /// `Basic ...` once known (environment or prompt).
    basic_auth: Mutex<Option<String>>,
    /// `[admin] user` of node.toml, offered at the prompt.
    default_user: Option<String>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl AdminTarget {
    /// From `--admin URL`, or from the `[admin]` table of `node.toml`. Only that table (and
    /// `[node] state_dir`) is read, so the CLI still reaches a node whose configuration is being
    /// edited and is invalid.
    pub fn resolve(args: &AdminArgs, node_file: &Path) -> Result<Self> {
        let node_text = std::fs::read_to_string(node_file);
        let node_table = node_text
            .as_ref()
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok());
        let admin_table = node_table
            .as_ref()
            .and_then(|table| table.get("admin").and_then(|a| a.as_table()).cloned());
        let admin_str = |key: &str| {
            admin_table
                .as_ref()
                .and_then(|admin| admin.get(key))
                .and_then(|value| value.as_str())
                .map(str::to_owned)
        };
        let default_user = admin_str("user");
        let env_auth = match (
            std::env::var("TANDEM_ADMIN_USER"),
            std::env::var("TANDEM_ADMIN_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) => Some(basic(&user, &password)),
            (Err(_), Ok(password)) => default_user.as_deref().map(|user| basic(user, &password)),
            _ => None,
        };
        let (scheme, authority) = match &args.url {
            Some(url) => split_url(url)?,
            None => {
                if let Err(error) = &node_text {
                    bail!(
                        "cannot find the node's admin address: {}: {error} (use --admin URL, --node FILE or --config-dir DIR)",
                        node_file.display()
                    );
                }
                let socket = resolve_relative(
                    node_file,
                    Path::new(
                        &admin_str("socket")
                            .unwrap_or_else(|| tandem_config::node_defaults::ADMIN_SOCKET.into()),
                    ),
                );
                // On the node: the socket, when this user may use it.
                if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                    return Ok(Self {
                        description: format!("the admin socket {}", socket.display()),
                        transport: Transport::Socket(socket),
                        basic_auth: Mutex::new(None),
                        default_user,
                    });
                }
                let listen = admin_str("listen")
                    .unwrap_or_else(|| tandem_config::node_defaults::ADMIN_LISTEN.into());
                let loopback = listen
                    .parse::<std::net::SocketAddr>()
                    .is_ok_and(|addr| addr.ip().is_loopback());
                let tls = admin_str("tls_certificate").is_some() || !loopback;
                (if tls { "https" } else { "http" }.to_owned(), listen)
            }
        };
        let tls = if scheme == "https" {
            let mut pin = match &args.fingerprint {
                Some(text) => Some(tandem_admin::tls::parse_fingerprint(text).ok_or_else(|| {
                    anyhow!("--admin-fingerprint {text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
                })?),
                None => None,
            };
            if pin.is_none() && !args.insecure && args.url.is_none() {
                pin = own_certificate_pin(node_table.as_ref(), node_file);
            }
            Some((tls_connector(pin, args.insecure)?, server_name(&authority)?))
        } else {
            None
        };
        Ok(Self {
            description: format!("{scheme}://{authority}"),
            transport: Transport::Http { authority, tls },
            basic_auth: Mutex::new(env_auth),
            default_user,
        })
    }

    async fn connect(&self) -> Result<Box<dyn Stream>> {
        match &self.transport {
            Transport::Socket(path) => Ok(Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .with_context(|| format!("connecting to {}", path.display()))?,
            )),
            Transport::Http { authority, tls } => {
                let tcp = tokio::net::TcpStream::connect(authority)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot reach the node at {} (is `tandem run` up?)",
                            self.description
                        )
                    })?;
                match tls {
                    None => Ok(Box::new(tcp)),
                    Some((connector, name)) => Ok(Box::new(
                        connector
                            .connect(name.clone(), tcp)
                            .await
                            .with_context(|| format!("TLS with {}", self.description))?,
                    )),
                }
            }
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(hyper::StatusCode, serde_json::Value)> {
        let stream = self.connect().await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .context("starting HTTP with the node")?;
        tokio::spawn(connection);
        let host = match &self.transport {
            Transport::Socket(_) => "localhost",
            Transport::Http { authority, .. } => authority.as_str(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .header(CONTENT_TYPE, "application/json")
            .header(tandem_admin::REQUESTED_BY, "tandem-cli");
        let auth = self
            .basic_auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let (Some(auth), Transport::Http { .. }) = (auth, &self.transport) {
            request = request.header(AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .context("building the admin request")?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("no answer from {}", self.description))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the admin answer")?
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        Ok((status, value))
    }

    /// Send one request; returns the parsed JSON body (or the text for non-JSON answers) and
    /// fails with the node's own error message on a non-2xx status. A 401 on a terminal asks
    /// for the credentials once.
    pub async fn call(&self, method: &str, path: &str) -> Result<serde_json::Value> {
        let attempt = || async {
            tokio::time::timeout(Duration::from_secs(10), self.send(method, path))
                .await
                .map_err(|_| anyhow!("no answer from {} within 10 s", self.description))?
        };
        let (mut status, mut value) = attempt().await?;
        if status == hyper::StatusCode::UNAUTHORIZED && self.prompt_credentials()? {
            (status, value) = attempt().await?;
        }
        if !status.is_success() {
            let message = value
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            let hint = if status == hyper::StatusCode::UNAUTHORIZED {
                " (set TANDEM_ADMIN_USER and TANDEM_ADMIN_PASSWORD)"
            } else {
                ""
            };
            bail!("{} ({status}){hint}", message.trim());
        }
        Ok(value)
    }

    /// Asks for user and password on the terminal (no echo); false when there is none.
    fn prompt_credentials(&self) -> Result<bool> {
        if !std::io::stdin().is_terminal() || matches!(self.transport, Transport::Socket(_)) {
            return Ok(false);
        }
        let user = match &self.default_user {
            Some(user) => user.clone(),
            None => {
                eprint!("admin user for {}: ", self.description);
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the user")?;
                line.trim().to_owned()
            }
        };
        let password =
            rpassword::prompt_password(format!("password of {user} on {}: ", self.description))
                .context("reading the password")?;
        *self
            .basic_auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(basic(&user, &password));
        Ok(true)
    }

    /// The node's status document (`GET /api/status`), typed.
    pub async fn status(&self) -> Result<Status> {
        let value = self.call("GET", "/api/status").await?;
        serde_json::from_value(value)
            .with_context(|| format!("{} answered with no status document", self.description))
    }

    /// The admin endpoint's own description (`GET /api/admin`); `None` from a node without it.
    pub async fn endpoint(&self) -> Option<tandem_admin::AdminEndpoint> {
        let value = self.call("GET", "/api/admin").await.ok()?;
        serde_json::from_value(value).ok()
    }
}

/// `http[s]://host:port[/...]` → (scheme, `host:port`).
fn split_url(url: &str) -> Result<(String, String)> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        anyhow!("--admin {url:?}: expected http://HOST:PORT or https://HOST:PORT")
    })?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        bail!("--admin {url:?}: the scheme must be http or https");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("--admin {url:?}: no host");
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.ends_with(']'))
    {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if scheme == "https" { 443 } else { 80 })
    };
    Ok((scheme, authority))
}

fn server_name(authority: &str) -> Result<ServerName<'static>> {
    let host = match authority.rsplit_once(':') {
        Some((host, _)) => host,
        None => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| anyhow!("{host:?} is not a host name"))
}

/// The node's own self-signed certificate (in `state_dir`), when this user can read it.
fn own_certificate_pin(node: Option<&toml::Table>, node_file: &Path) -> Option<[u8; 32]> {
    let state_dir = node
        .and_then(|n| n.get("node"))
        .and_then(|n| n.get("state_dir"))
        .and_then(|s| s.as_str())
        .unwrap_or(tandem_config::node_defaults::STATE_DIR);
    let path =
        resolve_relative(node_file, Path::new(state_dir)).join(tandem_admin::tls::SELF_SIGNED_CERT);
    let pem = std::fs::read(path).ok()?;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    tandem_admin::tls::parse_fingerprint(&tandem_admin::tls::fingerprint(der.as_ref()))
}

fn tls_connector(pin: Option<[u8; 32]>, insecure: bool) -> Result<tokio_rustls::TlsConnector> {
    let builder = rustls::ClientConfig::builder_with_provider(tandem_admin::tls::provider())
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?;
    let config = if pin.is_some() || insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin,
                provider: tandem_admin::tls::provider(),
            }))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for certificate in found.certs {
            let _ = roots.add(certificate);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts the server's certificate by its SHA-256 (or any, without a pin: `--insecure`); the
/// handshake signatures are still checked, so the server must hold the certificate's key.
#[derive(Debug)]
struct Pinned {
    pin: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let seen = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if seen.as_ref() == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the node's certificate has fingerprint {}, not the one given with --admin-fingerprint",
                tandem_admin::tls::fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Paths in `node.toml` are relative to the file's own directory.
pub fn resolve_relative(node_file: &Path, path: &Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        node_file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_split_into_scheme_and_authority() {
        assert_eq!(
            split_url("https://10.0.0.1:9443/").unwrap(),
            ("https".into(), "10.0.0.1:9443".into())
        );
        assert_eq!(
            split_url("http://lb1").unwrap(),
            ("http".into(), "lb1:80".into())
        );
        assert_eq!(
            split_url("https://[::1]").unwrap(),
            ("https".into(), "[::1]:443".into())
        );
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("10.0.0.1:9080").is_err());
        assert!(server_name("[::1]:443").is_ok());
        assert!(server_name("lb1.example:443").is_ok());
    }
}
