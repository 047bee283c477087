//! The TLS families of `/metrics`: handshakes, failures and certificate dates per TLS service, and the
//! services this node does not serve as configured (`config.not_applied`: certificates that failed to load).

use super::Builder;
use tandem_status::{Config, Service};

/// `tandem_config_not_applied{service}`: 1 for each service `config.not_applied` names (its certificates failed to
/// load: it keeps its previous settings, or, new, is not served), 0 for every other TLS service served, so a
/// fixed service's series goes back to 0 instead of vanishing.
pub(super) fn render_not_applied(b: &Builder, config: &Config, services: &[Service]) {
    let Some(m) = b.gauge_vec(
        "tandem_config_not_applied",
        "1 for a service of cluster.toml this node does not serve as configured (TLS certificates that failed to \
         load: its previous settings, or nothing when new, are served until a reload retries it), 0 for the other \
         TLS services",
        &["service"],
    ) else {
        return;
    };
    for service in services.iter().filter(|s| s.traffic.tls.is_some()) {
        m.with_label_values(&[service.label.as_str()]).set(0);
    }
    for service in &config.not_applied_services {
        m.with_label_values(&[service.as_str()]).set(1);
    }
}

/// TLS services: handshakes (by version, resumption, ALPN), failures by reason, and each certificate's validity
/// dates.
pub(super) fn render_tls(b: &Builder, services: &[Service]) {
    let tls: Vec<(&str, &tandem_status::ServiceTls)> = services
        .iter()
        .filter_map(|s| s.traffic.tls.as_ref().map(|t| (s.label.as_str(), t)))
        .collect();
    if tls.is_empty() {
        return;
    }
    let service = &["service"];
    let handshakes = b.counter_vec(
        "tandem_tls_handshakes_total",
        "Completed TLS handshakes",
        service,
    );
    let resumed = b.counter_vec(
        "tandem_tls_resumed_total",
        "Completed TLS handshakes that resumed a session (ticket or session id)",
        service,
    );
    let versions = b.counter_vec(
        "tandem_tls_version_total",
        "Completed TLS handshakes by protocol version (1.2, 1.3)",
        &["service", "version"],
    );
    let alpn = b.counter_vec(
        "tandem_tls_alpn_total",
        "Completed TLS handshakes by the protocol ALPN agreed (h2; http/1.1 also counts clients without ALPN)",
        &["service", "protocol"],
    );
    let failures = b.counter_vec(
        "tandem_tls_handshake_failures_total",
        "Failed TLS handshakes by reason (timeout, protocol, no_shared_parameters, closed, other)",
        &["service", "reason"],
    );
    let expiry = b.float_vec(
        "tandem_tls_certificate_expiry_timestamp_seconds",
        "When each certificate a TLS service serves expires (its notAfter), Unix seconds",
        &["service", "certificate"],
    );
    let not_before = b.float_vec(
        "tandem_tls_certificate_not_before_timestamp_seconds",
        "When each certificate a TLS service serves becomes valid (its notBefore), Unix seconds",
        &["service", "certificate"],
    );
    for (label, t) in tls {
        if let Some(m) = &handshakes {
            m.with_label_values(&[label]).inc_by(t.handshakes);
        }
        if let Some(m) = &resumed {
            m.with_label_values(&[label]).inc_by(t.resumed);
        }
        if let Some(m) = &versions {
            m.with_label_values(&[label, "1.2"]).inc_by(t.tls12);
            m.with_label_values(&[label, "1.3"]).inc_by(t.tls13);
        }
        if let Some(m) = &alpn {
            m.with_label_values(&[label, "h2"]).inc_by(t.alpn_h2);
            m.with_label_values(&[label, "http/1.1"])
                .inc_by(t.alpn_http1);
        }
        if let Some(m) = &failures {
            for (reason, count) in t.failures.reasons() {
                m.with_label_values(&[label, reason]).inc_by(count);
            }
        }
        if let Some(m) = &expiry {
            for c in &t.certificates {
                m.with_label_values(&[label, c.file.as_str()])
                    .set(c.not_after_unix as f64);
            }
        }
        if let Some(m) = &not_before {
            // 0 is a node that predates the field: no date rather than 1970.
            for c in t.certificates.iter().filter(|c| c.not_before_unix != 0) {
                m.with_label_values(&[label, c.file.as_str()])
                    .set(c.not_before_unix as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The status document of `docs/admin-api.md` (a TLS service "horizon" that is not applied), rendered after
    /// `change`.
    fn rendered(change: impl FnOnce(&mut tandem_status::Status)) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/admin-api.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let section = &doc[doc.find("## Status document").unwrap()..];
        let start = section.find("```json\n").unwrap() + "```json\n".len();
        let end = start + section[start..].find("```").unwrap();
        let mut status: tandem_status::Status = serde_json::from_str(&section[start..end]).unwrap();
        change(&mut status);
        super::super::render(&status)
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn a_service_not_applied_is_1_and_the_other_tls_services_0() {
        let text = rendered(|_| ());
        assert!(
            has(&text, "tandem_config_not_applied{service=\"horizon\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tandem_config_not_applied gauge"),
            "{text}"
        );
        // Not a TLS service: no series.
        assert!(
            !text.contains("tandem_config_not_applied{service=\"mysql\"}"),
            "{text}"
        );

        // Fixed: back to 0. A new TLS service that failed is not among the services, and is still 1.
        let text = rendered(|s| {
            s.config.not_applied.clear();
            s.config.not_applied_services = vec!["keystone".into()];
        });
        assert!(
            has(&text, "tandem_config_not_applied{service=\"horizon\"} 0"),
            "{text}"
        );
        assert!(
            has(&text, "tandem_config_not_applied{service=\"keystone\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn certificate_validity_dates() {
        let text = rendered(|_| ());
        let labels = "{certificate=\"horizon.pem\",service=\"horizon\"}";
        for line in [
            format!("tandem_tls_certificate_expiry_timestamp_seconds{labels} 1798761600"),
            format!("tandem_tls_certificate_not_before_timestamp_seconds{labels} 1767225600"),
        ] {
            assert!(has(&text, &line), "no {line:?} in\n{text}");
        }
        // A node that predates notBefore in its status (0): no series rather than 1970.
        let text = rendered(|s| {
            for service in &mut s.services {
                if let Some(tls) = &mut service.traffic.tls {
                    tls.certificates
                        .iter_mut()
                        .for_each(|c| c.not_before_unix = 0);
                }
            }
        });
        assert!(
            !text.contains("tandem_tls_certificate_not_before_timestamp_seconds{"),
            "{text}"
        );
        assert!(
            text.contains("tandem_tls_certificate_expiry_timestamp_seconds{"),
            "{text}"
        );
    }
}
