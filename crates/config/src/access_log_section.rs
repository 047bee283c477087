//! `[access_log]` of `node.toml`: where this node writes one line per HTTP request and TCP connection (off when the
//! section or its `path` is absent), how many lines may wait for the writer, and which services stay silent.
//! Node-local on purpose: where logs go is a property of the host, not of the replicated cluster.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::diag::Ctx;
use crate::reader::{Section, Val, array, int_in, string, table};

pub(crate) const ACCESS_LOG_KEYS: &[&str] = &["path", "queue", "skip"];

/// Lines held for the writer by default (about 2 MB of lines at most).
pub const DEFAULT_ACCESS_LOG_QUEUE: usize = 8192;
/// At most this many lines wait; beyond, lines are dropped and counted.
pub const MAX_ACCESS_LOG_QUEUE: u64 = 1_000_000;

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogPath {
    /// `path = "stderr"`: with the daemon's own log (journald under systemd).
    Stderr,
    /// An absolute file path, appended to, reopened on SIGHUP or when moved away (logrotate).
    File(PathBuf),
}

/// `[access_log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogConfig {
    /// `None`: no access log (the default).
    pub path: Option<AccessLogPath>,
    /// Lines that may wait for the writer; when full, further lines are dropped and counted.
    pub queue: usize,
    /// Service labels not logged.
    pub skip: Vec<String>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            path: None,
            queue: DEFAULT_ACCESS_LOG_QUEUE,
            skip: Vec::new(),
        }
    }
}

/// Reads `[access_log]`; `None` after an error (reported at its `file:line:col`).
pub(crate) fn read_access_log(ctx: &mut Ctx<'_>, v: Option<&Val<'_>>) -> Option<AccessLogConfig> {
    let mut config = AccessLogConfig::default();
    let Some(v) = v else {
        return Some(config);
    };
    let t = table(ctx, "access_log", v)?;
    let s = Section::new("[access_log]", v.span(), t);
    let errors_before = ctx.diags.errors.len();
    s.finish(ctx, ACCESS_LOG_KEYS, &|key| match key {
        "file" | "filename" | "target" => Some(format!(
            "unknown key `{key}` in [access_log]; the destination is `path`"
        )),
        "services" | "exclude" | "disabled" => Some(format!(
            "unknown key `{key}` in [access_log]; services not logged are listed in `skip`"
        )),
        _ => None,
    });
    if let Some(p) = s.get("path")
        && let Some(text) = string(ctx, "path", p)
    {
        let path = text.v.trim();
        if path == "stderr" {
            config.path = Some(AccessLogPath::Stderr);
        } else if path.starts_with('/') && !path.ends_with('/') {
            config.path = Some(AccessLogPath::File(PathBuf::from(path)));
        } else {
            ctx.error(
                &p.span(),
                format!(
                    "`path` = \"{}\" must be \"stderr\" or an absolute file path like \"/var/log/tandem/access.log\"",
                    text.v
                ),
            );
        }
    }
    if let Some(q) = s.get("queue")
        && let Some(n) = int_in(ctx, "queue", q, 1, MAX_ACCESS_LOG_QUEUE, " lines")
    {
        config.queue = usize::try_from(n.v).unwrap_or(DEFAULT_ACCESS_LOG_QUEUE);
    }
    if let Some(list) = s.get("skip")
        && let Some(items) = array(ctx, "skip", list)
    {
        for item in items {
            if let Some(label) = string(ctx, "skip", item) {
                if config.skip.iter().any(|l| l == label.v) {
                    ctx.warn(&item.span(), format!("`skip` names \"{}\" twice", label.v));
                } else {
                    config.skip.push(label.v.to_string());
                }
            }
        }
    }
    (ctx.diags.errors.len() == errors_before).then_some(config)
}

#[cfg(test)]
mod tests {
    use super::{AccessLogConfig, AccessLogPath};

    use crate::test_node as node;

    #[test]
    fn absent_means_no_access_log() {
        let config = node("").map(|n| n.access_log);
        assert_eq!(config, Ok(AccessLogConfig::default()));
        assert_eq!(AccessLogConfig::default().path, None);
    }

    #[test]
    fn a_file_a_queue_and_silent_services_are_read() {
        let config = node(
            "[access_log]\npath = \"/var/log/tandem/access.log\"\nqueue = 100\nskip = [\"mysql\", \"galera\"]\n",
        )
        .map(|n| n.access_log);
        assert_eq!(
            config,
            Ok(AccessLogConfig {
                path: Some(AccessLogPath::File("/var/log/tandem/access.log".into())),
                queue: 100,
                skip: vec!["mysql".into(), "galera".into()],
            })
        );
        let config = node("[access_log]\npath = \"stderr\"\n").map(|n| n.access_log);
        assert_eq!(config.map(|c| c.path), Ok(Some(AccessLogPath::Stderr)));
    }

    #[test]
    fn bad_values_are_errors_at_their_line() {
        for (extra, want) in [
            (
                "[access_log]\npath = \"access.log\"\n",
                "must be \"stderr\" or an absolute file path",
            ),
            ("[access_log]\npath = \"/var/log/\"\n", "absolute file path"),
            ("[access_log]\npath = 1\n", "must be a string"),
            ("[access_log]\nqueue = 0\n", "must not be 0"),
            ("[access_log]\nqueue = 2000000\n", "out of range"),
            ("[access_log]\nskip = \"mysql\"\n", "must be an array"),
            ("[access_log]\nfile = \"/x\"\n", "`path`"),
            ("[access_log]\nexclude = [\"x\"]\n", "`skip`"),
        ] {
            let errors = node(extra).expect_err(extra).to_string();
            assert!(errors.contains(want), "{extra}: {errors}");
            assert!(errors.contains("node.toml:10:"), "{extra}: {errors}");
        }
    }

    #[test]
    fn a_changed_section_needs_a_restart() {
        let old = node("").unwrap();
        let new = node("[access_log]\npath = \"stderr\"\n").unwrap();
        let plan = crate::NodePlan::new(&old, &new);
        assert_eq!(plan.restart_needed, vec!["access_log".to_string()]);
        assert!(crate::NodePlan::new(&new, &new).is_empty());
    }

    #[test]
    fn a_service_named_twice_is_a_warning() {
        let text = "[node]\nname = \"lb1\"\nrole = \"primary\"\ninterface = \"eth0\"\naddress = \"192.168.1.21\"\n\
             peer = \"192.168.1.22\"\n[admin]\nlisten = \"127.0.0.1:9080\"\n\
             [access_log]\npath = \"stderr\"\nskip = [\"a\", \"a\"]\n";
        let loaded = crate::parse_node_str(text, "node.toml", None).unwrap();
        assert_eq!(loaded.access_log.skip, vec!["a".to_string()]);
    }
}
