//! `[metrics]` of `node.toml`: the read-only Prometheus listener (`GET /metrics` only, no
//! credentials), so both nodes can be scraped without exposing the admin API.

use crate::diag::Ctx;
use crate::reader::{Section, Val, socket_addr, table};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

pub(crate) const METRICS_KEYS: &[&str] = &["listen"];

/// `[metrics]`; without the section (or without `listen`) metrics stay on the admin listener only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsConfig {
    /// Where the metrics-only listener binds, e.g. `0.0.0.0:9101`.
    pub listen: Option<SocketAddr>,
}

/// Reads `[metrics]`; `None` after an error (reported at its `file:line:col`).
/// `taken` are the node's other TCP listeners (admin, sync) with their names, refused as duplicates.
pub(crate) fn read_metrics(
    ctx: &mut Ctx<'_>,
    v: Option<&Val<'_>>,
    taken: &[(&str, SocketAddr)],
) -> Option<MetricsConfig> {
    let Some(v) = v else {
        return Some(MetricsConfig::default());
    };
    let t = table(ctx, "metrics", v)?;
    let s = Section::new("[metrics]", v.span(), t);
    let errors_before = ctx.diags.errors.len();
    s.finish(ctx, METRICS_KEYS, &|_| None);
    let mut config = MetricsConfig::default();
    if let Some(addr) = s
        .get("listen")
        .and_then(|l| socket_addr(ctx, "listen", l, "\"0.0.0.0:9101\" or \"[::]:9101\""))
    {
        let clash = taken.iter().find(|(_, other)| {
            other.port() == addr.v.port()
                && (other.ip() == addr.v.ip()
                    || other.ip().is_unspecified()
                    || addr.v.ip().is_unspecified())
        });
        match clash {
            Some((name, other)) => ctx.error(
                &addr.span,
                format!(
                    "metrics `listen` {} takes the port of the {name} ({other})",
                    addr.v
                ),
            ),
            None => config.listen = Some(addr.v),
        }
    }
    (ctx.diags.errors.len() == errors_before).then_some(config)
}

#[cfg(test)]
mod tests {

    use crate::test_node as node;

    #[test]
    fn absent_means_no_metrics_listener() {
        assert_eq!(node("").map(|n| n.metrics.listen), Ok(None));
    }

    #[test]
    fn a_listen_address_is_read() {
        let config = node("[metrics]\nlisten = \"0.0.0.0:9101\"\n").map(|n| n.metrics.listen);
        assert_eq!(config, Ok(Some("0.0.0.0:9101".parse().unwrap())));
    }

    #[test]
    fn clashes_and_bad_values_are_errors_at_their_line() {
        for (extra, want) in [
            (
                "[metrics]\nlisten = \"0.0.0.0:9080\"\n",
                "takes the port of the admin listener",
            ),
            (
                "[metrics]\nlisten = \"192.168.1.21:7778\"\n",
                "takes the port of the sync port",
            ),
            (
                "[metrics]\nlisten = \"localhost:9101\"\n",
                "is not an address:port",
            ),
            ("[metrics]\nlisten = \"0.0.0.0:0\"\n", "port 0"),
            ("[metrics]\nport = 9101\n", "port"),
        ] {
            let errors = node(extra).expect_err(extra).to_string();
            assert!(errors.contains(want), "{extra}: {errors}");
            assert!(errors.contains("node.toml:10:"), "{extra}: {errors}");
        }
    }
}
