//! `[proxy]` (and a service's `proxy` override) and the `[fallback]` server.

use super::defaults as d;
use super::misplaced::misplaced_in_section;
use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{Section, Val, int_in, ip, port, table};

const PROXY_KEYS: &[&str] = &[
    "connect_timeout_ms",
    "client_timeout_ms",
    "server_timeout_ms",
    "max_connections",
];

#[derive(Debug, Clone, Default)]
pub(super) struct ProxyInput {
    connect_timeout_ms: Option<u64>,
    client_timeout_ms: Option<u64>,
    server_timeout_ms: Option<u64>,
    max_connections: Option<u32>,
}

pub(super) fn read_proxy(ctx: &mut Ctx<'_>, v: &Val<'_>, name: &str) -> ProxyInput {
    let Some(t) = table(ctx, "proxy", v) else {
        return ProxyInput::default();
    };
    let s = Section::new(name, v.span(), t);
    s.finish(ctx, PROXY_KEYS, &misplaced_in_section);
    let ms = |ctx: &mut Ctx<'_>, key: &str| {
        s.get(key)
            .and_then(|v| int_in(ctx, key, v, 1, 86_400_000, " ms"))
            .map(|a| a.v)
    };
    ProxyInput {
        connect_timeout_ms: ms(ctx, "connect_timeout_ms"),
        client_timeout_ms: ms(ctx, "client_timeout_ms"),
        server_timeout_ms: ms(ctx, "server_timeout_ms"),
        max_connections: s
            .get("max_connections")
            .and_then(|v| int_in(ctx, "max_connections", v, 0, 10_000_000, ""))
            .and_then(|a| u32::try_from(a.v).ok()),
    }
}

pub(super) fn resolve_proxy(base: &ProxyInput, local: &ProxyInput) -> ProxyDefaults {
    ProxyDefaults {
        connect_timeout_ms: local
            .connect_timeout_ms
            .or(base.connect_timeout_ms)
            .unwrap_or(d::CONNECT_TIMEOUT_MS),
        client_timeout_ms: local
            .client_timeout_ms
            .or(base.client_timeout_ms)
            .unwrap_or(d::CLIENT_TIMEOUT_MS),
        server_timeout_ms: local
            .server_timeout_ms
            .or(base.server_timeout_ms)
            .unwrap_or(d::SERVER_TIMEOUT_MS),
        max_connections: local
            .max_connections
            .or(base.max_connections)
            .unwrap_or(d::MAX_CONNECTIONS),
    }
}

pub(super) fn read_fallback(ctx: &mut Ctx<'_>, v: &Val<'_>, name: &str) -> Option<FallbackServer> {
    let t = table(ctx, "fallback", v)?;
    let s = Section::new(name, v.span(), t);
    s.finish(ctx, &["address", "port"], &misplaced_in_section);
    let address = s
        .required(ctx, "address")
        .and_then(|a| ip(ctx, "address", a));
    let port = s.required(ctx, "port").and_then(|p| port(ctx, "port", p));
    Some(FallbackServer {
        address: address?.v,
        port: port?.v,
    })
}
