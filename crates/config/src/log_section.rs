//! `[log]` of `node.toml`: how the daemon writes its log.

use crate::diag::Ctx;
use crate::reader::{Section, Val, choice, table};
use serde::{Deserialize, Serialize};

pub(crate) const LOG_KEYS: &[&str] = &["format"];

/// `[log] format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines on standard error; under systemd (`JOURNAL_STREAM` set) straight to
    /// journald with each event's priority, so `journalctl -p warning` finds failovers.
    #[default]
    Text,
    /// One JSON object per line on standard error (time, level, target, message and fields), for a
    /// log shipper.
    Json,
}

/// `[log]`; the defaults without the section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// Reads `[log]`; `None` after an error (reported at its `file:line:col`).
pub(crate) fn read_log(ctx: &mut Ctx<'_>, v: Option<&Val<'_>>) -> Option<LogConfig> {
    let Some(v) = v else {
        return Some(LogConfig::default());
    };
    let t = table(ctx, "log", v)?;
    let s = Section::new("[log]", v.span(), t);
    let errors_before = ctx.diags.errors.len();
    s.finish(ctx, LOG_KEYS, &|_| None);
    let mut config = LogConfig::default();
    if let Some(f) = s.get("format")
        && let Some(format) = choice(
            ctx,
            "format",
            f,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )
    {
        config.format = format.v;
    }
    (ctx.diags.errors.len() == errors_before).then_some(config)
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    use crate::test_node as node;

    #[test]
    fn text_by_default_json_on_request() {
        assert_eq!(node("").map(|n| n.log.format), Ok(LogFormat::Text));
        let json = node("[log]\nformat = \"json\"\n").map(|n| n.log.format);
        assert_eq!(json, Ok(LogFormat::Json));
    }

    #[test]
    fn an_unknown_format_is_an_error_at_its_line() {
        let errors = node("[log]\nformat = \"syslog\"\n")
            .expect_err("syslog is not a format")
            .to_string();
        assert!(errors.contains("node.toml:10:"), "{errors}");
        assert!(errors.contains("json"), "{errors}");
    }
}
