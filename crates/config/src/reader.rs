//! Typed reading of a spanned TOML document: every problem becomes a diagnostic at the exact
//! key or value, and reading goes on so that one run reports everything.

use crate::diag::Ctx;
use std::net::IpAddr;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub(crate) type Val<'i> = Spanned<DeValue<'i>>;

/// A value read from the file together with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct At<T> {
    pub v: T,
    pub span: Range<usize>,
}

impl<T> At<T> {
    pub(crate) fn new(v: T, span: Range<usize>) -> Self {
        Self { v, span }
    }
}

/// One TOML table being read: hands out its keys and finally reports the ones nobody asked for.
pub(crate) struct Section<'t, 'i> {
    /// How the table is named in messages, e.g. `[heartbeat]` or `service "mysql"`.
    pub name: String,
    /// The table's header (or inline table) span: where "missing key" errors point.
    pub span: Range<usize>,
    table: &'t DeTable<'i>,
}

impl<'t, 'i> Section<'t, 'i> {
    pub(crate) fn new(name: impl Into<String>, span: Range<usize>, table: &'t DeTable<'i>) -> Self {
        Self {
            name: name.into(),
            span,
            table,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'t Val<'i>> {
        self.table.get(key)
    }

    /// The span of `key` itself (not its value).
    pub(crate) fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, _)| k.span())
    }

    pub(crate) fn required(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<&'t Val<'i>> {
        let v = self.get(key);
        if v.is_none() {
            ctx.error(
                &self.span,
                format!("missing required key `{key}` in {}", self.name),
            );
        }
        v
    }

    /// Reports every key not in `allowed`. `misplaced` may explain a key that belongs elsewhere.
    pub(crate) fn finish(
        &self,
        ctx: &mut Ctx<'_>,
        allowed: &[&str],
        misplaced: &dyn Fn(&str) -> Option<String>,
    ) {
        for (key, _) in self.table.iter() {
            let k = key.get_ref().as_ref();
            if allowed.contains(&k) {
                continue;
            }
            let message = if let Some(why) = misplaced(k) {
                why
            } else if let Some(near) = nearest(k, allowed) {
                format!("unknown key `{k}` in {}; did you mean `{near}`?", self.name)
            } else {
                format!(
                    "unknown key `{k}` in {}; expected one of: {}",
                    self.name,
                    allowed.join(", ")
                )
            };
            ctx.error(&key.span(), message);
        }
    }
}

/// The allowed name closest to `key` by edit distance, when it is plausibly a typo.
pub(crate) fn nearest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let key_l = key.to_ascii_lowercase().replace('-', "_");
    if key_l.len() >= 3
        && let Some(a) = allowed.iter().find(|a| a.starts_with(key_l.as_str()))
    {
        return Some(a);
    }
    allowed
        .iter()
        .map(|a| (edit_distance(&key_l, a), *a))
        .filter(|(d, a)| *d <= (a.len().max(key.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// "a string", "an integer", ... for type errors.
pub(crate) fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn wrong_type(ctx: &mut Ctx<'_>, key: &str, v: &Val<'_>, expected: &str) {
    ctx.error(
        &v.span(),
        format!("`{key}` must be {expected}, found {}", kind(v.get_ref())),
    );
}

pub(crate) fn integer(ctx: &mut Ctx<'_>, key: &str, v: &Val<'_>) -> Option<i128> {
    match v.get_ref() {
        DeValue::Integer(i) => match i128::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(n),
            Err(_) => {
                ctx.error(&v.span(), format!("`{key}`: integer out of range"));
                None
            }
        },
        _ => {
            wrong_type(ctx, key, v, "an integer");
            None
        }
    }
}

/// An integer in `min..=max`; `unit` (e.g. " ms") only decorates the message.
pub(crate) fn int_in(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: &Val<'_>,
    min: u64,
    max: u64,
    unit: &str,
) -> Option<At<u64>> {
    let n = integer(ctx, key, v)?;
    if n < i128::from(min) || n > i128::from(max) {
        let msg = if n == 0 {
            format!("`{key}` must not be 0 (allowed: {min}..={max}{unit})")
        } else {
            format!("`{key}` = {n} is out of range (allowed: {min}..={max}{unit})")
        };
        ctx.error(&v.span(), msg);
        return None;
    }
    u64::try_from(n).ok().map(|n| At::new(n, v.span()))
}

pub(crate) fn string<'t>(ctx: &mut Ctx<'_>, key: &str, v: &'t Val<'_>) -> Option<At<&'t str>> {
    match v.get_ref() {
        DeValue::String(s) => Some(At::new(s.as_ref(), v.span())),
        _ => {
            wrong_type(ctx, key, v, "a string");
            None
        }
    }
}

pub(crate) fn boolean(ctx: &mut Ctx<'_>, key: &str, v: &Val<'_>) -> Option<At<bool>> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(At::new(*b, v.span())),
        _ => {
            wrong_type(ctx, key, v, "true or false");
            None
        }
    }
}

pub(crate) fn table<'t, 'i>(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: &'t Val<'i>,
) -> Option<&'t DeTable<'i>> {
    match v.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => {
            wrong_type(ctx, key, v, "a table");
            None
        }
    }
}

pub(crate) fn array<'t, 'i>(ctx: &mut Ctx<'_>, key: &str, v: &'t Val<'i>) -> Option<&'t [Val<'i>]> {
    match v.get_ref() {
        DeValue::Array(a) => Some(a.as_ref()),
        _ => {
            wrong_type(ctx, key, v, "an array");
            None
        }
    }
}

/// A unicast IP address (not 0.0.0.0/::, not multicast, not broadcast).
pub(crate) fn ip(ctx: &mut Ctx<'_>, key: &str, v: &Val<'_>) -> Option<At<IpAddr>> {
    let s = string(ctx, key, v)?;
    match s.v.trim().parse::<IpAddr>() {
        Ok(addr) if addr.is_unspecified() => {
            ctx.error(
                &v.span(),
                format!("`{key}`: {addr} is the unspecified address; give a real address"),
            );
            None
        }
        Ok(addr) if addr.is_multicast() || addr == IpAddr::from([255, 255, 255, 255]) => {
            ctx.error(
                &v.span(),
                format!("`{key}`: {addr} is not a unicast address"),
            );
            None
        }
        Ok(addr) => Some(At::new(addr, v.span())),
        Err(_) => {
            ctx.error(
                &v.span(),
                format!("`{key}`: \"{}\" is not a valid IP address", s.v),
            );
            None
        }
    }
}

pub(crate) fn port(ctx: &mut Ctx<'_>, key: &str, v: &Val<'_>) -> Option<At<u16>> {
    let n = integer(ctx, key, v)?;
    port_number(ctx, key, n, &v.span()).map(|p| At::new(p, v.span()))
}

pub(crate) fn port_number(
    ctx: &mut Ctx<'_>,
    key: &str,
    n: i128,
    span: &Range<usize>,
) -> Option<u16> {
    if n == 0 {
        ctx.error(span, format!("`{key}`: port 0 is not allowed (1..=65535)"));
        return None;
    }
    match u16::try_from(n) {
        Ok(p) => Some(p),
        Err(_) => {
            ctx.error(
                span,
                format!("`{key}`: port {n} is out of range (1..=65535)"),
            );
            None
        }
    }
}

/// An `"ADDRESS:PORT"` string (port 1..=65535); `example` completes the error message, e.g.
/// `"127.0.0.1:9080" or "[::1]:9080"`.
pub(crate) fn socket_addr(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: &Val<'_>,
    example: &str,
) -> Option<At<std::net::SocketAddr>> {
    let text = string(ctx, key, v)?;
    match text.v.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {
            ctx.error(
                &v.span(),
                format!("`{key}`: port 0 is not allowed (1..=65535)"),
            );
            None
        }
        Ok(addr) => Some(At::new(addr, v.span())),
        Err(_) => {
            ctx.error(
                &v.span(),
                format!(
                    "`{key}` = \"{}\" is not an address:port like {example}",
                    text.v
                ),
            );
            None
        }
    }
}

/// One of a fixed set of strings.
pub(crate) fn choice<T: Copy>(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: &Val<'_>,
    options: &[(&str, T)],
) -> Option<At<T>> {
    let s = string(ctx, key, v)?;
    if let Some((_, t)) = options.iter().find(|(name, _)| *name == s.v) {
        return Some(At::new(*t, v.span()));
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let hint = match nearest(s.v, &names) {
        Some(near) => format!("; did you mean \"{near}\"?"),
        None => String::new(),
    };
    ctx.error(
        &v.span(),
        format!(
            "`{key}` = \"{}\" is not one of {}{hint}",
            s.v,
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    None
}

/// A name usable as a label / id: letters, digits, `-`, `_`, `.`; 1..=64 characters.
pub(crate) fn label(ctx: &mut Ctx<'_>, key: &str, v: &Val<'_>) -> Option<At<String>> {
    let s = string(ctx, key, v)?;
    if s.v.is_empty() {
        ctx.error(&v.span(), format!("`{key}` must not be empty"));
        return None;
    }
    if s.v.chars().count() > 64 {
        ctx.error(&v.span(), format!("`{key}` is longer than 64 characters"));
        return None;
    }
    if let Some(bad) =
        s.v.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        ctx.error(
            &v.span(),
            format!(
                "`{key}` = \"{}\": character {bad:?} is not allowed (letters, digits, '-', '_', '.')",
                s.v
            ),
        );
        return None;
    }
    Some(At::new(s.v.to_string(), v.span()))
}

/// Converts a free-form table into an owned `toml::Table` (for the node-local settings).
pub(crate) fn to_toml_table(t: &DeTable<'_>) -> toml::Table {
    let mut out = toml::Table::new();
    for (k, v) in t.iter() {
        if let Some(value) = to_toml_value(v.get_ref()) {
            out.insert(k.get_ref().to_string(), value);
        }
    }
    out
}

fn to_toml_value(v: &DeValue<'_>) -> Option<toml::Value> {
    Some(match v {
        DeValue::String(s) => toml::Value::String(s.to_string()),
        DeValue::Integer(i) => {
            toml::Value::Integer(i64::from_str_radix(i.as_str(), i.radix()).ok()?)
        }
        DeValue::Float(f) => toml::Value::Float(f.as_str().parse().ok()?),
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(a) => toml::Value::Array(
            a.iter()
                .filter_map(|e| to_toml_value(e.get_ref()))
                .collect(),
        ),
        DeValue::Table(t) => toml::Value::Table(to_toml_table(t)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_suggests_typos_only() {
        let allowed = ["interval_ms", "dead_ms", "warn_ms", "init_dead_ms"];
        assert_eq!(nearest("intervl_ms", &allowed), Some("interval_ms"));
        assert_eq!(nearest("deadms", &allowed), Some("dead_ms"));
        assert_eq!(nearest("init-dead-ms", &allowed), Some("init_dead_ms"));
        assert_eq!(nearest("completely_else", &allowed), None);
        assert_eq!(nearest("dead", &allowed), Some("dead_ms"));
    }
}
