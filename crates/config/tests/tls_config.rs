//! `tls` on a service: parsing, the certificate checks with their positions, the canonical form and digest
//! covering the files' content but not where they live, and the reload plan of a changed certificate.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use tandem_config::*;

/// 2030-01-01T00:00:00Z: the tests' "now".
const NOW: i64 = 1_893_456_000;
const DAY: i64 = 86_400;

/// A self-signed ECDSA P-256 certificate for `names`, valid between two dates (year, month, day): the PEM
/// file (chain then key) and the key alone.
fn pem(names: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let cert = params.self_signed(&key).unwrap();
    (
        format!("{}{}", cert.pem(), key.serialize_pem()),
        key.serialize_pem(),
    )
}

/// Valid for years around [`NOW`].
fn good(names: &[&str]) -> String {
    pem(names, (2020, 1, 1), (2040, 1, 1)).0
}

fn cluster(tls: &str) -> String {
    format!(
        r#"[cluster]
name = "lab"

[[service]]
label = "horizon"
vip = "10.0.0.100"
ports = [443]
mode = "http"
tls = {tls}
[[service.server]]
label = "h1"
address = "10.0.1.1"
port = 80

[[service]]
label = "plain"
vip = "10.0.0.100"
ports = [8080]
mode = "http"
[[service.server]]
label = "p1"
address = "10.0.1.2"
"#
    )
}

fn write_dir(dir: &Path, cluster_text: &str, files: &[(&str, &str)]) {
    fs::write(dir.join("cluster.toml"), cluster_text).unwrap();
    fs::write(
        dir.join("node.toml"),
        format!(
            "[node]\nname = \"lb1\"\nrole = \"primary\"\naddress = \"10.0.0.1\"\npeer = \"10.0.0.2\"\n\
             manage_vips = false\nstate_dir = \"{}\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, text).unwrap();
    }
}

fn check_in(dir: &Path) -> Result<Loaded, Diagnostics> {
    check_at(&dir.join("cluster.toml"), &dir.join("node.toml"), NOW)
}

/// The warnings about certificates (the test directories have no secret file: that is warned about too).
fn tls_warnings(loaded: &Loaded) -> Vec<&Diagnostic> {
    loaded
        .warnings
        .iter()
        .filter(|w| w.message.contains("certificate"))
        .collect()
}

/// The single error of a broken config, as `line:col: message`.
fn only_error(dir: &Path) -> String {
    let diags = check_in(dir).unwrap_err();
    assert_eq!(diags.errors.len(), 1, "{diags}");
    let d = &diags.errors[0];
    format!("{}: {}", d.position(), d.message)
}

#[test]
fn a_tls_service_reads_its_certificates_and_check_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let horizon = good(&["horizon.example.org"]);
    let keystone = good(&["keystone.example.org", "*.api.example.org"]);
    write_dir(
        dir.path(),
        &cluster(
            r#"{ certificates = ["horizon.pem", "certs/keystone.pem"], redirect_http = true }"#,
        ),
        &[("horizon.pem", &horizon), ("certs/keystone.pem", &keystone)],
    );
    let loaded = check_in(dir.path()).unwrap();
    let tls = loaded.cluster.services[0].tls.clone().unwrap();
    assert_eq!(tls.redirect_http, Some(80));
    let files: Vec<&str> = tls.certificates.iter().map(|c| c.file.as_str()).collect();
    assert_eq!(files, ["horizon.pem", "certs/keystone.pem"]);
    assert_eq!(
        tls.certificates[1].path,
        dir.path().join("certs/keystone.pem")
    );
    assert_eq!(
        tls.certificates[0].sha256,
        tls::sha256_hex(horizon.as_bytes())
    );
    assert_eq!(loaded.cluster.services[1].tls, None);
    assert_eq!(
        loaded.certificate_files(),
        vec![
            ("horizon.pem".to_string(), horizon.into_bytes()),
            ("certs/keystone.pem".to_string(), keystone.into_bytes())
        ]
    );
    assert!(tls_warnings(&loaded).is_empty(), "{:?}", loaded.warnings);

    let summary = check_summary(&loaded);
    assert!(
        summary.contains("plain HTTP on port 80 redirected to HTTPS"),
        "{summary}"
    );
    assert!(
        summary.contains(
            "certs/keystone.pem: keystone.example.org, *.api.example.org (expires 2040-01-01)"
        ),
        "{summary}"
    );
    let json = check_json(&loaded);
    let first = &json["services"][0]["tls"]["certificates"][0];
    assert_eq!(first["file"], "horizon.pem");
    assert_eq!(first["names"][0], "horizon.example.org");
    assert_eq!(first["expires"], "2040-01-01");
    assert_eq!(json["services"][0]["tls"]["redirect_http"], 80);
    assert!(json["services"][1]["tls"].is_null());
}

#[test]
fn every_certificate_problem_points_at_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, _) = pem(&["a.example.org"], (2020, 1, 1), (2040, 1, 1));
    let (_, other_key) = pem(&["b.example.org"], (2020, 1, 1), (2040, 1, 1));
    let cert_only = cert_a
        .split("-----BEGIN PRIVATE KEY")
        .next()
        .unwrap()
        .to_string();
    let expired = pem(&["old.example.org"], (2020, 1, 1), (2029, 12, 1)).0;
    let future = pem(&["new.example.org"], (2030, 2, 1), (2040, 1, 1)).0;
    let cases: &[(&str, &str, &str)] = &[
        ("missing.pem", "", "cannot read"),
        ("garbage.pem", "hello", "holds no certificate"),
        ("nokey.pem", &cert_only, "holds no private key"),
        (
            "mismatch.pem",
            &format!("{cert_only}{other_key}"),
            "does not belong to the first certificate",
        ),
        ("expired.pem", &expired, "expired on 2029-12-01"),
        ("future.pem", &future, "is not valid before 2030-02-01"),
    ];
    for (file, text, reason) in cases {
        let files: Vec<(&str, &str)> = if text.is_empty() {
            Vec::new()
        } else {
            vec![(file, text)]
        };
        write_dir(
            dir.path(),
            &cluster(&format!(r#"{{ certificates = ["{file}"] }}"#)),
            &files,
        );
        let error = only_error(dir.path());
        // Line 9 is `tls = ...`; the entry starts at column 25.
        assert!(error.starts_with("9:25: "), "{file}: {error}");
        assert!(
            error.contains(&format!("service \"horizon\" tls: certificate \"{file}\"")),
            "{error}"
        );
        assert!(error.contains(reason), "{file}: {error}");
    }
}

/// `tandem check` refuses a certificate out of its dates; the daemon (start-up, reload, a pushed config) serves it
/// with an alarm at the same entry, and the secondary's check of the pushed files agrees with the primary's.
#[test]
fn a_certificate_out_of_its_dates_is_refused_by_check_and_served_by_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let expired = pem(&["old.example.org"], (2020, 1, 1), (2029, 12, 1)).0;
    let future = pem(&["new.example.org"], (2030, 2, 1), (2040, 1, 1)).0;
    let cases: &[(&str, &str, &str)] = &[
        (
            "expired.pem",
            &expired,
            "expired on 2029-12-01: clients will refuse it",
        ),
        (
            "future.pem",
            &future,
            "is not valid before 2030-02-01: clients will refuse it",
        ),
    ];
    for (file, text, reason) in cases {
        write_dir(
            dir.path(),
            &cluster(&format!(r#"{{ certificates = ["{file}"] }}"#)),
            &[(file, text)],
        );
        let (cluster_path, node_path) = (
            dir.path().join("cluster.toml"),
            dir.path().join("node.toml"),
        );
        let error = only_error(dir.path());
        assert!(error.starts_with("9:25: "), "{file}: {error}");
        assert!(error.contains(reason), "{file}: {error}");

        let served = check_with(&cluster_path, &node_path, NOW, ExpiredCertificates::Serve)
            .unwrap_or_else(|d| panic!("{file}: refused when serving: {d}"));
        assert_eq!(served.alarms.len(), 1, "{file}: {:?}", served.alarms);
        let alarm = &served.alarms[0];
        assert_eq!(alarm.position(), "9:25", "{alarm}");
        assert!(alarm.message.contains(reason), "{alarm}");
        assert!(
            alarm.message.contains(&format!("certificate \"{file}\"")),
            "{alarm}"
        );
        assert!(tls_warnings(&served).is_empty(), "{:?}", served.warnings);
        let tls = served.cluster.services[0].tls.clone().unwrap();
        assert_eq!(tls.certificates[0].file, *file);
        assert_eq!(
            served.certificate_files(),
            vec![(file.to_string(), text.as_bytes().to_vec())]
        );
        // `tandem check` at the same moment reports no alarm: it refused instead.
        assert!(check_at(&cluster_path, &node_path, NOW).is_err());

        // The secondary checks the pushed text and files as the primary's daemon did: same config, same digest.
        let text = fs::read_to_string(&cluster_path).unwrap();
        let (pushed, _, remarks) = parse_cluster_for_node_in(
            &text,
            "pushed",
            &served.node,
            dir.path(),
            NOW,
            ExpiredCertificates::Serve,
        )
        .unwrap_or_else(|d| panic!("{file}: the secondary refused: {d}"));
        assert_eq!(digest(&pushed), served.digest);
        assert!(remarks.errors.is_empty());
        assert_eq!(remarks.alarms.len(), 1, "{:?}", remarks.alarms);
        assert!(remarks.alarms[0].message.contains(reason));
        let refused = parse_cluster_for_node_in(
            &text,
            "pushed",
            &served.node,
            dir.path(),
            NOW,
            ExpiredCertificates::Refuse,
        )
        .unwrap_err();
        assert!(refused.to_string().contains(reason), "{refused}");
    }
}

/// Serving a certificate out of its dates does not let through a file with nothing to serve.
#[test]
fn a_broken_certificate_is_an_error_even_when_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, _) = pem(&["a.example.org"], (2020, 1, 1), (2029, 12, 1));
    let (_, other_key) = pem(&["b.example.org"], (2020, 1, 1), (2040, 1, 1));
    let cert_only = cert_a
        .split("-----BEGIN PRIVATE KEY")
        .next()
        .unwrap()
        .to_string();
    let cases: &[(&str, &str, &str)] = &[
        ("missing.pem", "", "cannot read"),
        ("garbage.pem", "hello", "holds no certificate"),
        ("nokey.pem", &cert_only, "holds no private key"),
        (
            "mismatch.pem",
            &format!("{cert_only}{other_key}"),
            "does not belong to the first certificate",
        ),
    ];
    for (file, text, reason) in cases {
        let files: Vec<(&str, &str)> = if text.is_empty() {
            Vec::new()
        } else {
            vec![(file, text)]
        };
        write_dir(
            dir.path(),
            &cluster(&format!(r#"{{ certificates = ["{file}"] }}"#)),
            &files,
        );
        let diags = check_with(
            &dir.path().join("cluster.toml"),
            &dir.path().join("node.toml"),
            NOW,
            ExpiredCertificates::Serve,
        )
        .unwrap_err();
        assert_eq!(diags.errors.len(), 1, "{diags}");
        assert_eq!(diags.errors[0].position(), "9:25", "{diags}");
        assert!(diags.errors[0].message.contains(reason), "{file}: {diags}");
        assert!(diags.alarms.is_empty(), "{:?}", diags.alarms);
    }
}

#[test]
fn a_certificate_expiring_within_30_days_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let soon = pem(&["soon.example.org"], (2020, 1, 1), (2030, 1, 11)).0;
    write_dir(
        dir.path(),
        &cluster(r#"{ certificates = ["soon.pem"] }"#),
        &[("soon.pem", &soon)],
    );
    let loaded = check_in(dir.path()).unwrap();
    let warnings = tls_warnings(&loaded);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = warnings[0];
    assert_eq!(w.position(), "9:25");
    assert!(w.message.contains("expires in 10 days (2030-01-11)"), "{w}");
    // 31 days before expiry: no warning; a day after: expired.
    let quiet = check_at(
        &dir.path().join("cluster.toml"),
        &dir.path().join("node.toml"),
        NOW - 21 * DAY,
    )
    .unwrap();
    assert!(tls_warnings(&quiet).is_empty(), "{:?}", quiet.warnings);
    let late = check_at(
        &dir.path().join("cluster.toml"),
        &dir.path().join("node.toml"),
        NOW + 11 * DAY,
    )
    .unwrap_err();
    assert!(late.to_string().contains("expired on 2030-01-11"), "{late}");
}

#[test]
fn the_tls_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cert = good(&["a.example.org"]);
    let cases: &[(&str, &str)] = &[
        (
            r#"{ certificates = [] }"#,
            "9:24: service \"horizon\" tls: `certificates` must name at least one PEM file",
        ),
        (
            r#"{ redirect_http = 81 }"#,
            "9:7: missing required key `certificates` in service \"horizon\" tls",
        ),
        (
            r#"{ certificates = ["a.pem", "a.pem"] }"#,
            "9:34: service \"horizon\" tls: certificate \"a.pem\" is listed twice",
        ),
        (
            r#"{ certificates = ["a.pem"], redirect_http = 443 }"#,
            "9:51: service \"horizon\": `redirect_http` port 443 is one of the service's own (HTTPS) ports (line 7); plain HTTP needs a port of its own",
        ),
        (
            r#"{ certificates = ["a.pem"], redirect_http = 8080 }"#,
            "9:51: `redirect_http`: 10.0.0.100:8080 is already used by service \"plain\" (line 18)",
        ),
        (
            r#"{ certificates = ["a.pem"], redirect_http = "80" }"#,
            "9:51: `redirect_http` must be true (port 80) or a port number, found a string",
        ),
        (
            r#"{ certificates = ["a.pem"], sni = true }"#,
            "9:35: unknown key `sni` in service \"horizon\" tls; expected one of: certificates, redirect_http",
        ),
    ];
    for (tls, expected) in cases {
        write_dir(dir.path(), &cluster(tls), &[("a.pem", &cert)]);
        assert_eq!(only_error(dir.path()), *expected, "{tls}");
    }
    // TLS needs HTTP mode.
    let tcp =
        cluster(r#"{ certificates = ["a.pem"] }"#).replacen("mode = \"http\"", "mode = \"tcp\"", 1);
    write_dir(dir.path(), &tcp, &[("a.pem", &cert)]);
    let error = only_error(dir.path());
    assert!(
        error.starts_with("9:7: service \"horizon\": `tls` needs mode = \"http\""),
        "{error}"
    );
    // A redirect port equal to another VIP's port is fine; `false` is no redirect.
    write_dir(
        dir.path(),
        &cluster(r#"{ certificates = ["a.pem"], redirect_http = false }"#),
        &[("a.pem", &cert)],
    );
    assert_eq!(
        check_in(dir.path()).unwrap().cluster.services[0]
            .tls
            .as_ref()
            .unwrap()
            .redirect_http,
        None
    );
}

#[test]
fn the_digest_covers_certificate_content_but_not_where_it_lives() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let cert = good(&["a.example.org"]);
    let text = cluster(r#"{ certificates = ["a.pem"], redirect_http = 8081 }"#);
    write_dir(one.path(), &text, &[("a.pem", &cert)]);
    write_dir(two.path(), &text, &[("a.pem", &cert)]);
    let a = check_in(one.path()).unwrap();
    let b = check_in(two.path()).unwrap();
    assert_ne!(
        a.cluster.services[0].tls.as_ref().unwrap().certificates[0].path,
        b.cluster.services[0].tls.as_ref().unwrap().certificates[0].path
    );
    assert_eq!(a.digest, b.digest, "same files, same digest on both nodes");
    let canonical = canonical_toml(&a.cluster);
    assert!(
        !canonical.contains(&one.path().display().to_string()),
        "{canonical}"
    );
    let sha = tls::sha256_hex(cert.as_bytes());
    assert!(
        canonical.contains(&format!(
            "tls = {{ certificates = [{{ file = \"a.pem\", sha256 = \"{sha}\" }}], redirect_http = 8081 }}"
        )),
        "{canonical}"
    );
    // The canonical form reads back (pinned to the file's content) into the same model.
    let (again, _, _) = parse_cluster_in(
        &canonical,
        "canonical",
        one.path(),
        NOW,
        ExpiredCertificates::Refuse,
    )
    .unwrap();
    assert_eq!(again, a.cluster);

    // A renewed certificate, cluster.toml untouched: a new digest, and the service changes for the reload.
    let renewed = good(&["a.example.org"]);
    fs::write(one.path().join("a.pem"), &renewed).unwrap();
    let c = check_in(one.path()).unwrap();
    assert_ne!(c.digest, a.digest);
    let plan = ReloadPlan::new(&a.cluster, &c.cluster);
    match &plan.service("horizon").unwrap().change {
        ServiceChange::Changed(delta) => assert_eq!(delta.settings, vec![Setting::Tls]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plan.service("plain").unwrap().change,
        ServiceChange::Unchanged
    );
    // The pinned canonical form now refuses the changed file.
    let stale = parse_cluster_in(
        &canonical,
        "canonical",
        one.path(),
        NOW,
        ExpiredCertificates::Refuse,
    )
    .unwrap_err();
    assert!(stale.to_string().contains("(the file changed)"), "{stale}");
    // Without a directory, a relative certificate cannot be found: said so.
    let error = parse_cluster_str(&text, "pushed").unwrap_err();
    assert!(
        error.to_string().contains("which is not known here"),
        "{error}"
    );
}

#[test]
fn a_config_without_tls_keeps_its_digest() {
    // A config without TLS has no `tls` line in its canonical form and the canonical layout stays v1, so the digests
    // of running configurations do not change with the upgrade that brought `tls` (the value is pinned).
    let text = cluster("{ certificates = [] }").replace("tls = { certificates = [] }\n", "");
    let config = parse_cluster_str(&text, "cluster.toml").unwrap();
    let canonical = canonical_toml(&config);
    assert!(!canonical.contains("tls"), "{canonical}");
    assert!(canonical.starts_with("# tandem canonical cluster.toml v1\n"));
    assert_eq!(digest(&config), PINNED_DIGEST);
}

const PINNED_DIGEST: &str = "615b54cc40f554433ffb2f7146cac5772ab4fa74deb52ffff0f9d64fbd23608c";

#[test]
fn an_absolute_certificate_path_works_with_a_warning_that_it_is_not_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let path = elsewhere.path().join("a.pem");
    fs::write(&path, good(&["a.example.org"])).unwrap();
    write_dir(
        dir.path(),
        &cluster(&format!(r#"{{ certificates = ["{}"] }}"#, path.display())),
        &[],
    );
    let loaded = check_in(dir.path()).unwrap();
    assert_eq!(
        loaded.cluster.services[0]
            .tls
            .as_ref()
            .unwrap()
            .certificates[0]
            .path,
        path
    );
    let warnings = tls_warnings(&loaded);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .message
            .contains("the config push carries only files relative"),
        "{}",
        warnings[0]
    );
}
