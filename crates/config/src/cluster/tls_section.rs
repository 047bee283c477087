//! A service's `tls = { certificates = [...], redirect_http = 80 }`: which PEM files it serves (each read,
//! checked and fingerprinted here, so `tandem check` reports on the very bytes the proxy will serve and the
//! config push carries) and the optional plain-HTTP redirect port.

use super::misplaced::no_hint;
use crate::diag::Ctx;
use crate::loaded::CheckedCertificate;
use crate::model::*;
use crate::reader::{At, Section, Val, array, integer, port_number, string, table};
use crate::tls::{self, ExpiredCertificates, Validity};
use std::path::{Path, PathBuf};
use toml::de::DeValue;

const TLS_KEYS: &[&str] = &["certificates", "redirect_http"];
const PINNED_KEYS: &[&str] = &["file", "sha256"];

/// Certificate files one service may name (SNI picks among them).
pub const MAX_CERTIFICATES_PER_SERVICE: usize = 64;

/// Where certificate files are read from, the moment their validity is judged at and what a certificate out of
/// its dates is.
#[derive(Debug, Clone)]
pub(crate) struct CertificateSource {
    /// `cluster.toml`'s directory (absolute); `None` when the text has no file behind it.
    pub dir: Option<PathBuf>,
    pub now_unix: i64,
    pub expired: ExpiredCertificates,
}

/// What reading `tls` gave: the settings (`Err` when something was wrong), the redirect port with its span (for
/// the VIP:port checks across services) and the certificates read.
pub(super) struct TlsDraft {
    pub settings: Result<Option<TlsSettings>, ()>,
    pub redirect: Option<At<u16>>,
    pub certificates: Vec<CheckedCertificate>,
}

pub(super) fn read_tls(
    ctx: &mut Ctx<'_>,
    v: Option<&Val<'_>>,
    service: &str,
    label: Option<&str>,
    mode: Option<Mode>,
    ports: &[At<u16>],
    source: &CertificateSource,
) -> TlsDraft {
    let mut draft = TlsDraft {
        settings: Ok(None),
        redirect: None,
        certificates: Vec::new(),
    };
    let Some(v) = v else {
        return draft;
    };
    draft.settings = Err(());
    let Some(t) = table(ctx, "tls", v) else {
        return draft;
    };
    let name = format!("{service} tls");
    let s = Section::new(name.clone(), v.span(), t);
    s.finish(ctx, TLS_KEYS, &no_hint);
    if mode == Some(Mode::Tcp) {
        ctx.error(
            &v.span(),
            format!(
                "{service}: `tls` needs mode = \"http\" (TLS is terminated by the HTTP proxy; a TCP service passes \
                 TLS through to its servers untouched)"
            ),
        );
    }
    let mut ok = true;
    draft.redirect = match s.get("redirect_http") {
        None => None,
        Some(r) => match read_redirect(ctx, r, service, ports) {
            Ok(port) => port,
            Err(()) => {
                ok = false;
                None
            }
        },
    };
    let mut certificates = Vec::new();
    if let Some(list) = s.required(ctx, "certificates") {
        match array(ctx, "certificates", list) {
            None => ok = false,
            Some([]) => {
                ctx.error(
                    &list.span(),
                    format!("{name}: `certificates` must name at least one PEM file"),
                );
                ok = false;
            }
            Some(items) if items.len() > MAX_CERTIFICATES_PER_SERVICE => {
                ctx.error(
                    &list.span(),
                    format!(
                        "{name}: {} certificate files, more than the {MAX_CERTIFICATES_PER_SERVICE} a service may name",
                        items.len()
                    ),
                );
                ok = false;
            }
            Some(items) => {
                for item in items {
                    let Some(entry) = read_entry(ctx, item, &name) else {
                        ok = false;
                        continue;
                    };
                    if certificates
                        .iter()
                        .any(|c: &CertificateFile| c.file == entry.v.0)
                    {
                        ctx.error(
                            &entry.span,
                            format!("{name}: certificate \"{}\" is listed twice", entry.v.0),
                        );
                        ok = false;
                        continue;
                    }
                    match check_file(ctx, &entry, &name, label, source) {
                        Some((file, checked)) => {
                            certificates.push(file);
                            draft.certificates.push(checked);
                        }
                        None => ok = false,
                    }
                }
            }
        }
    } else {
        ok = false;
    }
    if ok && mode == Some(Mode::Http) {
        draft.settings = Ok(Some(TlsSettings {
            certificates,
            redirect_http: draft.redirect.as_ref().map(|r| r.v),
        }));
    }
    draft
}

/// `redirect_http = true` (port 80), `false` (none) or a port, which must not be one of the service's own.
fn read_redirect(
    ctx: &mut Ctx<'_>,
    v: &Val<'_>,
    service: &str,
    ports: &[At<u16>],
) -> Result<Option<At<u16>>, ()> {
    let port = match v.get_ref() {
        DeValue::Boolean(true) => 80,
        DeValue::Boolean(false) => return Ok(None),
        DeValue::Integer(_) => {
            let n = integer(ctx, "redirect_http", v).ok_or(())?;
            port_number(ctx, "redirect_http", n, &v.span()).ok_or(())?
        }
        other => {
            ctx.error(
                &v.span(),
                format!(
                    "`redirect_http` must be true (port 80) or a port number, found {}",
                    crate::reader::kind(other)
                ),
            );
            return Err(());
        }
    };
    if let Some(own) = ports.iter().find(|p| p.v == port) {
        let line = ctx.line_of(&own.span);
        ctx.error(
            &v.span(),
            format!(
                "{service}: `redirect_http` port {port} is one of the service's own (HTTPS) ports (line {line}); \
                 plain HTTP needs a port of its own"
            ),
        );
        return Err(());
    }
    Ok(Some(At::new(port, v.span())))
}

/// One entry: `"horizon.pem"`, or `{ file = "horizon.pem", sha256 = "..." }` (the canonical form's, pinning the
/// file's content). The value is (file, pinned sha256).
fn read_entry(ctx: &mut Ctx<'_>, v: &Val<'_>, name: &str) -> Option<At<(String, Option<String>)>> {
    let (file, pinned) = match v.get_ref() {
        DeValue::String(_) => (string(ctx, "certificates", v)?.v.to_string(), None),
        DeValue::Table(t) => {
            let s = Section::new(format!("{name} certificate"), v.span(), t);
            s.finish(ctx, PINNED_KEYS, &no_hint);
            let file_value = s.required(ctx, "file")?;
            let file = string(ctx, "file", file_value)?.v.to_string();
            let pinned = match s.get("sha256") {
                Some(h) => Some(string(ctx, "sha256", h)?.v.to_ascii_lowercase()),
                None => None,
            };
            (file, pinned)
        }
        other => {
            ctx.error(
                &v.span(),
                format!(
                    "`certificates` entries must be file names, found {}",
                    crate::reader::kind(other)
                ),
            );
            return None;
        }
    };
    if file.trim().is_empty() {
        ctx.error(
            &v.span(),
            format!("{name}: a certificate file name is empty"),
        );
        return None;
    }
    Some(At::new((file, pinned), v.span()))
}

/// Reads and judges one certificate file; every problem is an error at its entry (an expiry within
/// [`tls::EXPIRY_WARNING_DAYS`] a warning, a certificate out of its dates what `source.expired` says).
fn check_file(
    ctx: &mut Ctx<'_>,
    entry: &At<(String, Option<String>)>,
    name: &str,
    label: Option<&str>,
    source: &CertificateSource,
) -> Option<(CertificateFile, CheckedCertificate)> {
    let (file, pinned) = &entry.v;
    let path = match (Path::new(file).is_absolute(), &source.dir) {
        (true, _) => PathBuf::from(file),
        (false, Some(dir)) => dir.join(file),
        (false, None) => {
            ctx.error(
                &entry.span,
                format!(
                    "{name}: certificate \"{file}\" is relative to cluster.toml's directory, which is not known here"
                ),
            );
            return None;
        }
    };
    let what = format!("{name}: certificate \"{file}\"");
    let (material, bytes) = match tls::load_certificate(&path) {
        Ok(read) => read,
        Err(reason)
            if reason.starts_with("cannot read") || reason.contains(" bytes, more than") =>
        {
            ctx.error(&entry.span, format!("{what}: {reason}"));
            return None;
        }
        Err(reason) => {
            ctx.error(&entry.span, format!("{what} ({}) {reason}", path.display()));
            return None;
        }
    };
    let sha256 = tls::sha256_hex(&bytes);
    if let Some(pin) = pinned
        && *pin != sha256
    {
        ctx.error(
            &entry.span,
            format!(
                "{what}: its SHA-256 is {sha256}, not the {pin} written here (the file changed)"
            ),
        );
        return None;
    }
    if Path::new(file).is_absolute() {
        ctx.warn(
            &entry.span,
            format!(
                "{what} is an absolute path: the config push carries only files relative to cluster.toml's \
                 directory, so the peer must have it already (provision it there by hand)"
            ),
        );
    }
    let expiry = tls::utc_date(material.not_after_unix);
    let out_of_date = match material.validity_at(source.now_unix) {
        Validity::Good => None,
        Validity::ExpiresSoon { days } => {
            ctx.warn(
                &entry.span,
                format!("{what} expires in {days} days ({expiry}): renew it"),
            );
            None
        }
        Validity::Expired => Some(format!(
            "{what} expired on {expiry}: clients will refuse it"
        )),
        Validity::NotYetValid => Some(format!(
            "{what} is not valid before {}: clients will refuse it (check the clock, or the certificate's dates)",
            tls::utc_date(material.not_before_unix)
        )),
    };
    if let Some(message) = out_of_date {
        match source.expired {
            ExpiredCertificates::Refuse => {
                ctx.error(&entry.span, message);
                return None;
            }
            ExpiredCertificates::Serve => ctx.alarm(
                &entry.span,
                format!("{message}; serving it anyway until it is replaced"),
            ),
        }
    }
    let checked = CheckedCertificate {
        service: label.unwrap_or_default().to_string(),
        file: file.clone(),
        path: path.clone(),
        sha256: sha256.clone(),
        names: material.names,
        not_before_unix: material.not_before_unix,
        not_after_unix: material.not_after_unix,
        bytes,
    };
    Some((
        CertificateFile {
            file: file.clone(),
            path,
            sha256,
        },
        checked,
    ))
}
