//! The admin listener's TLS identity: a configured PEM certificate and key, or a self-signed
//! certificate generated on first start and kept in `state_dir` (key mode 0600), reused later.
//! Its SHA-256 fingerprint is what a CLI pins (`--admin-fingerprint`) and what `tandem status`
//! shows. rustls with the ring provider.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File names of the generated certificate and key inside `state_dir`.
pub const SELF_SIGNED_CERT: &str = "admin-tls.crt";
pub const SELF_SIGNED_KEY: &str = "admin-tls.key";

/// A server certificate ready to serve.
#[derive(Clone)]
pub struct TlsIdentity {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, `AB:CD:...` as `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint: String,
    pub certificate: PathBuf,
    pub self_signed: bool,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .field("certificate", &self.certificate)
            .field("self_signed", &self.self_signed)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating the self-signed certificate: {0}")]
    Generate(String),
}

/// The fingerprint of a DER certificate: SHA-256 as upper-case hex pairs joined by `:`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(95);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

/// A fingerprint as the user wrote it (`sha256:`/`SHA256:` prefix, colons, any case) as 32 bytes.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let text = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))
        .unwrap_or(text);
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// rustls on ring, the crypto library of the whole project (HMAC, HKDF, PBKDF2, AEAD). rustls
/// 0.23.48 deprecates this provider only for its lack of post-quantum key exchange, which an admin
/// listener pinned by fingerprint can do without; one place allows it, servers and clients use it.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(pem("no CERTIFICATE block found".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: format!("no PEM private key found: {e}"),
    })
}

/// The configured certificate chain (leaf first) and key.
pub fn load_identity(certificate: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
    let chain = read_chain(certificate)?;
    let key = read_key(key)?;
    let fingerprint = fingerprint(chain[0].as_ref());
    Ok(TlsIdentity {
        config: server_config(chain, key)?,
        fingerprint,
        certificate: certificate.to_path_buf(),
        self_signed: false,
    })
}

/// The self-signed identity in `state_dir`: the one kept there, else a new one for `names`
/// (DNS names) and `ips`, written there first (certificate 0644, key 0600).
pub fn self_signed_identity(
    state_dir: &Path,
    names: &[String],
    ips: &[IpAddr],
) -> Result<TlsIdentity, TlsError> {
    let cert_path = state_dir.join(SELF_SIGNED_CERT);
    let key_path = state_dir.join(SELF_SIGNED_KEY);
    if !(cert_path.exists() && key_path.exists()) {
        generate(&cert_path, &key_path, names, ips)?;
    }
    let mut identity = load_identity(&cert_path, &key_path)?;
    identity.self_signed = true;
    Ok(identity)
}

fn generate(
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
    ips: &[IpAddr],
) -> Result<(), TlsError> {
    let mut sans: Vec<String> = vec!["localhost".into()];
    sans.extend(names.iter().cloned());
    sans.extend(ips.iter().map(IpAddr::to_string));
    sans.dedup();
    let generated =
        rcgen::generate_simple_self_signed(sans).map_err(|e| TlsError::Generate(e.to_string()))?;
    if let Some(dir) = cert_path.parent() {
        fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // The key first, created 0600 (never world-readable, not even for a moment).
    write_new(
        key_path,
        generated.key_pair.serialize_pem().as_bytes(),
        0o600,
    )?;
    if let Err(error) = write_new(cert_path, generated.cert.pem().as_bytes(), 0o644) {
        let _ = fs::remove_file(key_path);
        return Err(error);
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A half pair left by a crash is replaced.
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn self_signed_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ips = [IpAddr::from([127, 0, 0, 1])];
        let first = self_signed_identity(dir.path(), &["lb1.example".into()], &ips).unwrap();
        assert!(first.self_signed);
        assert_eq!(first.fingerprint.len(), 95);
        let key_mode = fs::metadata(dir.path().join(SELF_SIGNED_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let again = self_signed_identity(dir.path(), &[], &ips).unwrap();
        assert_eq!(again.fingerprint, first.fingerprint);
        assert_eq!(
            parse_fingerprint(&first.fingerprint),
            parse_fingerprint(&format!("sha256:{}", first.fingerprint.to_lowercase()))
        );
        assert!(parse_fingerprint(&first.fingerprint).is_some());
        assert!(parse_fingerprint("AB:CD").is_none());
    }

    #[test]
    fn bad_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        fs::write(&cert, "not pem").unwrap();
        let error = load_identity(&cert, &cert).unwrap_err().to_string();
        assert!(error.contains("c.pem"), "{error}");
    }
}
