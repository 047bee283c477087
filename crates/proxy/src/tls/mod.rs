//! TLS termination of HTTP-mode services whose `Service.tls` is set: the rustls server configuration of one service
//! runtime ([`TlsService`], built from the certificate files with `tandem_config::tls`, the same reader `tandem
//! check` uses), the certificate choice by SNI ([`SniResolver`]), the accepted connection's handshake
//! (`serve.rs`, which hands the decrypted stream to the hyper engine for HTTP/1.1 or h2) and the plain-HTTP
//! listener that redirects to `https://` (`redirect.rs`).
//!
//! # Behaviour worth knowing
//! - rustls on ring (the project's crypto library; aws-lc-rs with the `aws-lc-rs` feature, [`provider`]), TLS 1.2
//!   and 1.3 with rustls' safe default suites; ALPN `h2` and `http/1.1` (a client offering neither is served
//!   HTTP/1.1).
//! - The certificate is the first whose names cover the SNI host name (exact or one-label wildcard), else the
//!   first one (no SNI, or no match).
//! - Resumption: TLS 1.3 tickets and TLS 1.2 tickets; with a [`tickets::TicketSecret`] (the daemon's: the pair's
//!   shared secret) their keys are derived from it per service and 6-hour period, so a ticket resumes on both
//!   nodes (`tickets.rs`); without, rustls' ring ticketer (random keys of this process, rotating every 6 hours).
//!   Kept across reloads of the service. TLS 1.2 session ids in a bounded cache of this process
//!   ([`SESSION_CACHE_ENTRIES`]).
//! - The handshake must be done within min(10 s, client timeout) of the connection's first byte; until that first
//!   byte the connection holds no TLS state at all.
//! - After the handshake: HTTP/1.1 on the native engine when it is the engine (the first request head within
//!   min(10 s, client timeout), keep-alive idle up to the client timeout, as for plain HTTP), else on hyper's
//!   (whose header read timeout also runs while a keep-alive connection idles: idle after min(10 s, client
//!   timeout)); h2 always on hyper's, idle up to the client timeout. An idle keep-alive TLS connection on the
//!   native engine costs ~21 KiB of the daemon's RSS (10k connections after one request each, release build;
//!   plain HTTP ~10 KiB, HAProxy 2.6 with OpenSSL 3 ~15.5 KiB): rustls' session (its 4 KiB read buffer, keys) is
//!   the difference.
//! - A certificate file whose SHA-256 is no longer the one the configuration was checked with is refused: the
//!   service runtime is not built (a reload keeps the old one, see `lib.rs`).

pub(crate) mod redirect;
pub(crate) mod serve;
pub mod tickets;

use std::fmt::Write as _;
use std::sync::Arc;

use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use tandem_config::model::TlsSettings;

/// TLS 1.2 session ids remembered per service (each entry a few hundred bytes).
pub const SESSION_CACHE_ENTRIES: usize = 4096;

/// The rustls provider of the data plane's handshakes, as [`PROVIDER_NAME`] says: ring by default (the project's
/// crypto library, as the admin listener's, see `tandem_admin::tls::provider`; rustls 0.23.48 deprecates it only
/// for its lack of post-quantum key exchange), aws-lc-rs with the `aws-lc-rs` feature (its default groups, the
/// hybrid X25519MLKEM768 first). docs/benchmarks.md, "TLS provider: ring against aws-lc-rs", says why ring is
/// the default. Session tickets are ring's either way (`tickets.rs`, [`new_ticketer`]).
#[cfg(not(feature = "aws-lc-rs"))]
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// See the ring variant above.
#[cfg(feature = "aws-lc-rs")]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The name of [`provider`], for the daemon's start-up log (so a benchmark can tell which build it measured).
pub const PROVIDER_NAME: &str = if cfg!(feature = "aws-lc-rs") {
    "aws-lc-rs"
} else {
    "ring"
};

/// A new ticket key rotator (ring's ChaCha20-Poly1305 tickets, keys rotating every 6 hours).
pub(crate) fn new_ticketer() -> Result<Arc<dyn ProducesTickets>, String> {
    rustls::crypto::ring::Ticketer::new().map_err(|e| format!("cannot set up session tickets: {e}"))
}

/// One certificate a service presents, for the status view and the expiry metric.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    /// The file as written in `cluster.toml`.
    pub file: String,
    /// The leaf's DNS names (lower-case; wildcards as written).
    pub names: Vec<String>,
    /// The leaf's `notBefore`, Unix seconds.
    pub not_before_unix: i64,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after_unix: i64,
}

/// The TLS side of one service runtime: what accepted connections handshake with.
pub struct TlsService {
    pub(crate) config: Arc<rustls::ServerConfig>,
    #[cfg_attr(not(test), allow(dead_code))]
    resolver: Arc<SniResolver>,
    pub(crate) ticketer: Arc<dyn ProducesTickets>,
    pub certificates: Vec<CertificateInfo>,
}

impl std::fmt::Debug for TlsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsService")
            .field("certificates", &self.certificates)
            .finish_non_exhaustive()
    }
}

/// Hex of the SHA-256 of `bytes`, as `CertificateFile::sha256` holds it.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl TlsService {
    /// Reads every certificate file of `settings` and builds the server configuration. `ticketer`: the previous
    /// runtime's, so that tickets issued before a reload still resume; `None` makes a new one.
    pub(crate) fn build(
        settings: &TlsSettings,
        ticketer: Option<Arc<dyn ProducesTickets>>,
    ) -> Result<TlsService, String> {
        if settings.certificates.is_empty() {
            return Err("no certificate file".into());
        }
        let provider = provider();
        let mut keys = Vec::with_capacity(settings.certificates.len());
        let mut certificates = Vec::with_capacity(settings.certificates.len());
        for file in &settings.certificates {
            let (material, bytes) = tandem_config::tls::load_certificate(&file.path)
                .map_err(|e| format!("{}: {e}", file.file))?;
            if !sha256_hex(&bytes).eq_ignore_ascii_case(&file.sha256) {
                return Err(format!(
                    "{}: the file changed after the configuration was checked (SHA-256 differs); reload to check it again",
                    file.file
                ));
            }
            let key = provider
                .key_provider
                .load_private_key(material.key.clone_key())
                .map_err(|e| format!("{}: the private key is not usable: {e}", file.file))?;
            let certified = CertifiedKey::new(material.chain.clone(), key);
            keys.push((material.names.clone(), Arc::new(certified)));
            certificates.push(CertificateInfo {
                file: file.file.clone(),
                names: material.names,
                not_before_unix: material.not_before_unix,
                not_after_unix: material.not_after_unix,
            });
        }
        let ticketer = match ticketer {
            Some(t) => t,
            None => new_ticketer()?,
        };
        let resolver = Arc::new(SniResolver { keys });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        config.ticketer = ticketer.clone();
        Ok(TlsService {
            config: Arc::new(config),
            resolver,
            ticketer,
            certificates,
        })
    }
}

/// Picks the certificate by SNI: the first whose names cover the host name, else the first one.
#[derive(Debug)]
pub(crate) struct SniResolver {
    /// Each certificate's names (lower-case) and key, in the configured order; never empty.
    keys: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl SniResolver {
    /// The index of the certificate served for `server_name` (`None`: no SNI).
    fn choose(&self, server_name: Option<&str>) -> usize {
        let Some(name) = server_name else { return 0 };
        let host = name.trim_end_matches('.').to_ascii_lowercase();
        self.keys
            .iter()
            .position(|(names, _)| {
                names
                    .iter()
                    .any(|n| tandem_config::tls::name_covers(n, &host))
            })
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.choose(hello.server_name());
        self.keys.get(i).map(|(_, k)| k.clone())
    }
}

/// The handshake failure's reason for the metrics, from what tokio-rustls returned.
pub(crate) fn failure_reason(e: &std::io::Error) -> crate::metrics::HandshakeFailure {
    use crate::metrics::HandshakeFailure as F;
    use std::io::ErrorKind as K;
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::PeerIncompatible(_) => F::NoSharedParameters,
            rustls::Error::InvalidMessage(_)
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::DecryptError => F::Protocol,
            _ => F::Other,
        };
    }
    match e.kind() {
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => F::Closed,
        K::InvalidData => F::Protocol,
        _ => F::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_config::model::CertificateFile;

    fn write_cert(dir: &std::path::Path, name: &str, names: &[&str]) -> CertificateFile {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        let path = dir.join(name);
        std::fs::write(&path, &pem).expect("write");
        CertificateFile {
            file: name.into(),
            path,
            sha256: sha256_hex(pem.as_bytes()),
        }
    }

    #[test]
    fn chooses_by_sni_exact_then_wildcard_else_the_first() {
        let dir = tempfile::tempdir().expect("dir");
        let settings = TlsSettings {
            certificates: vec![
                write_cert(dir.path(), "a.pem", &["horizon.example.org"]),
                write_cert(dir.path(), "b.pem", &["*.api.example.org"]),
                write_cert(dir.path(), "c.pem", &["keystone.api.example.org"]),
            ],
            redirect_http: None,
        };
        let tls = TlsService::build(&settings, None).expect("builds");
        assert_eq!(tls.certificates.len(), 3);
        let resolver = &tls.resolver;
        assert_eq!(resolver.choose(None), 0);
        assert_eq!(resolver.choose(Some("HORIZON.example.org.")), 0);
        // The first that covers the name wins: the wildcard comes before the exact name.
        assert_eq!(resolver.choose(Some("keystone.api.example.org")), 1);
        assert_eq!(resolver.choose(Some("nova.api.example.org")), 1);
        assert_eq!(resolver.choose(Some("a.b.api.example.org")), 0);
        assert_eq!(resolver.choose(Some("other.example.com")), 0);
    }

    #[test]
    fn refuses_a_file_changed_after_check_and_an_empty_list() {
        let dir = tempfile::tempdir().expect("dir");
        let mut file = write_cert(dir.path(), "a.pem", &["a.example.org"]);
        file.sha256 = sha256_hex(b"something else");
        let settings = TlsSettings {
            certificates: vec![file],
            redirect_http: None,
        };
        let err = TlsService::build(&settings, None).expect_err("changed file");
        assert!(err.contains("a.pem") && err.contains("changed"), "{err}");
        let empty = TlsSettings {
            certificates: vec![],
            redirect_http: None,
        };
        assert!(TlsService::build(&empty, None).is_err());
    }

    #[test]
    fn failure_reasons() {
        use crate::metrics::HandshakeFailure as F;
        let tls = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            failure_reason(&tls(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::NoCipherSuitesInCommon
            ))),
            F::NoSharedParameters
        );
        assert_eq!(
            failure_reason(&tls(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
            ))),
            F::Protocol
        );
        assert_eq!(
            failure_reason(&std::io::ErrorKind::UnexpectedEof.into()),
            F::Closed
        );
        assert_eq!(
            failure_reason(&tls(rustls::Error::General("x".into()))),
            F::Other
        );
    }
}
