//! TLS helpers of the proxy's tests: certificates (rcgen, ECDSA P-256) written as the config loader describes
//! them, TLS services, a rustls client.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tandem_config::model::{CertificateFile, Mode, Service, TlsSettings};

use super::{server, service};

/// One PEM file (certificate + key) for `names`, written to `dir/file`, as the config loader would describe it.
pub fn certificate(dir: &Path, file: &str, names: &[&str]) -> CertificateFile {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let path = dir.join(file);
    std::fs::write(&path, &pem).unwrap();
    // The certificate alone, what the clients trust (`--cacert`, `-CAfile`).
    std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
    CertificateFile {
        file: file.into(),
        path,
        sha256: sha256_hex(pem.as_bytes()),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn ca(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}.crt"))
}

pub fn tls_service(
    label: &str,
    vip: SocketAddr,
    backend: SocketAddr,
    certificates: Vec<CertificateFile>,
    redirect_http: Option<u16>,
) -> Service {
    let mut svc = service(label, vip, Mode::Http, vec![server("a", backend, 1)]);
    svc.tls = Some(TlsSettings {
        certificates,
        redirect_http,
    });
    svc
}

/// A TLS client (rustls) trusting `trust`'s certificate, for `name`.
pub fn connector(trust: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(trust).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
