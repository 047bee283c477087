//! The certificate files of TLS services: reading one PEM file (chain and private key) into what a TLS
//! server needs, with the facts `tandem check` reports on (names, validity, the key matching the certificate).
//! The proxy builds its TLS acceptors from [`read_certificate`] too, so a file that `tandem check` accepts is
//! one the proxy can serve.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// Largest certificate file read (a chain of a few certificates and a key is a few KiB).
pub const MAX_CERTIFICATE_FILE_BYTES: u64 = 1 << 20;

/// One PEM file's chain and key, with what the server and `tandem check` need to know about the leaf.
#[derive(Debug)]
pub struct CertificateMaterial {
    /// Leaf first, then the intermediates, as in the file.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The leaf's DNS subject alternative names as written (`*.example.org` included), or its common name
    /// when it has no DNS names; lower-cased.
    pub names: Vec<String>,
    /// The leaf's validity, Unix seconds.
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl CertificateMaterial {
    /// Whether the leaf covers `server_name` (an SNI host name): an exact name, or a wildcard `*.example.org`
    /// covering exactly one label (`a.example.org`, not `example.org` nor `a.b.example.org`).
    pub fn covers(&self, server_name: &str) -> bool {
        let host = server_name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|name| name_covers(name, &host))
    }
}

/// Whether one certificate name (lower-case; maybe `*.`-prefixed) covers lower-case `host`.
pub fn name_covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => name == host,
    }
}

/// What a loader makes of a certificate outside its validity dates (expired, or not yet valid). Either way the
/// file must still be readable, hold a key matching its leaf and parse: otherwise there is nothing to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredCertificates {
    /// An error at the certificate's entry: the configuration is refused (`tandem check`, `tandem pair`).
    Refuse,
    /// The certificate is served and the problem is an alarm at its entry ([`crate::Loaded::alarms`], logged at
    /// error level): the daemon at start-up, on `tandem reload` and on a pushed config. A lapsed certificate must
    /// not stop a node from serving its other services or taking its failover role; monitoring shouts instead
    /// (`tandem_tls_certificate_expiry_timestamp_seconds` and `..._not_before_timestamp_seconds`, alerts
    /// `TandemTlsCertificateExpired` and `TandemTlsCertificateNotYetValid`).
    Serve,
}

/// A certificate expiring sooner than this is reported by `tandem check` (a warning, not an error).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// How a certificate's validity stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid now and for at least [`EXPIRY_WARNING_DAYS`] more.
    Good,
    /// Valid now, expiring within [`EXPIRY_WARNING_DAYS`]: whole days left.
    ExpiresSoon {
        days: i64,
    },
    Expired,
    NotYetValid,
}

impl CertificateMaterial {
    /// The leaf's validity at `now_unix` (the caller's clock, so tests are deterministic).
    pub fn validity_at(&self, now_unix: i64) -> Validity {
        if now_unix < self.not_before_unix {
            Validity::NotYetValid
        } else if now_unix > self.not_after_unix {
            Validity::Expired
        } else if self.not_after_unix - now_unix < EXPIRY_WARNING_DAYS * 86_400 {
            Validity::ExpiresSoon {
                days: (self.not_after_unix - now_unix) / 86_400,
            }
        } else {
            Validity::Good
        }
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time, as `tandem check` prints expiry dates.
pub fn utc_date(unix: i64) -> String {
    match x509_parser::time::ASN1Time::from_timestamp(unix) {
        Ok(t) => t.to_datetime().date().to_string(),
        Err(_) => format!("@{unix}"),
    }
}

/// SHA-256 of a certificate file's bytes, lower-case hex (what `CertificateFile::sha256` holds).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Reads a PEM file; the error says what is wrong with it (the caller adds which file and config entry).
pub fn load_certificate(path: &Path) -> Result<(CertificateMaterial, Vec<u8>), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_CERTIFICATE_FILE_BYTES {
        return Err(format!(
            "{} is {} bytes, more than a certificate file can be ({MAX_CERTIFICATE_FILE_BYTES})",
            path.display(),
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let material = read_certificate(&bytes)?;
    Ok((material, bytes))
}

/// Parses PEM bytes holding a certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1), and
/// checks that the key belongs to the leaf. Expiry is not judged here: the caller decides what "soon" means.
pub fn read_certificate(pem: &[u8]) -> Result<CertificateMaterial, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a valid PEM certificate chain: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("holds no certificate (a `BEGIN CERTIFICATE` block is needed)".into());
    };
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "holds no private key (a `BEGIN PRIVATE KEY` block is needed)".to_string()
        }
        other => format!("the private key cannot be read: {other}"),
    })?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the first certificate cannot be parsed: {e}"))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("the private key is not usable: {e}"))?;
    if let Some(public) = signing_key.public_key()
        && public.as_ref() != cert.public_key().raw
    {
        return Err("the private key does not belong to the first certificate".into());
    }
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for general in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = general {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let validity = cert.validity();
    Ok(CertificateMaterial {
        names,
        not_before_unix: validity.not_before.timestamp(),
        not_after_unix: validity.not_after.timestamp(),
        chain,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn reads_chain_key_names_and_validity() {
        let (cert, key) = self_signed(&["horizon.example.org", "*.api.example.org"]);
        let m = read_certificate(format!("{cert}{key}").as_bytes()).expect("valid");
        assert_eq!(m.chain.len(), 1);
        assert_eq!(m.names, ["horizon.example.org", "*.api.example.org"]);
        assert!(m.not_after_unix > m.not_before_unix);
        assert!(m.covers("HORIZON.example.org."));
        assert!(m.covers("keystone.api.example.org"));
        assert!(!m.covers("api.example.org"));
        assert!(!m.covers("a.keystone.api.example.org"));
        assert!(!m.covers("other.example.org"));
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let (cert, _) = self_signed(&["a.example.org"]);
        let (_, other_key) = self_signed(&["b.example.org"]);
        let err = read_certificate(format!("{cert}{other_key}").as_bytes()).expect_err("mismatch");
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn names_what_is_missing_or_broken() {
        let (cert, key) = self_signed(&["a.example.org"]);
        assert!(
            read_certificate(key.as_bytes())
                .expect_err("no cert")
                .contains("no certificate")
        );
        assert!(
            read_certificate(cert.as_bytes())
                .expect_err("no key")
                .contains("no private key")
        );
        let truncated = &cert[..cert.len() / 2];
        assert!(read_certificate(format!("{truncated}{key}").as_bytes()).is_err());
        assert!(read_certificate(b"garbage").is_err());
    }
}
