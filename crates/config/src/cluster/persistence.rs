//! A service's `persistence`: the mode and the options that apply to it.

use super::defaults as d;
use super::misplaced::no_hint;
use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{Section, Val, choice, int_in, string};
use toml::de::DeValue;

const PERSISTENCE_KEYS: &[&str] = &["mode", "timeout_s", "table_size", "cookie_name"];

/// Persistence with the fields that do not apply to `mode` zeroed (see docs/configuration.md).
pub(crate) fn persistence_for(mode: PersistenceMode) -> Persistence {
    match mode {
        PersistenceMode::None => Persistence {
            mode,
            timeout_s: 0,
            table_size: 0,
            cookie_name: String::new(),
        },
        PersistenceMode::SourceIp | PersistenceMode::LastSuccessful => Persistence {
            mode,
            timeout_s: d::PERSISTENCE_TIMEOUT_S,
            table_size: d::PERSISTENCE_TABLE_SIZE,
            cookie_name: String::new(),
        },
        PersistenceMode::HttpCookie => Persistence {
            mode,
            timeout_s: 0,
            table_size: 0,
            cookie_name: d::COOKIE_NAME.to_string(),
        },
    }
}

const PERSISTENCE_MODES: &[(&str, PersistenceMode)] = &[
    ("none", PersistenceMode::None),
    ("source-ip", PersistenceMode::SourceIp),
    ("http-cookie", PersistenceMode::HttpCookie),
    ("last-successful", PersistenceMode::LastSuccessful),
];

pub(super) fn read_persistence(
    ctx: &mut Ctx<'_>,
    v: &Val<'_>,
    service: &str,
    service_mode: Option<Mode>,
) -> Option<Persistence> {
    // `persistence = "source-ip"` is shorthand for `{ mode = "source-ip" }`.
    let (mode, mode_span, t) = match v.get_ref() {
        DeValue::String(_) => {
            let m = choice(ctx, "persistence", v, PERSISTENCE_MODES)?;
            (m.v, m.span, None)
        }
        DeValue::Table(t) => {
            let s = Section::new(format!("{service} persistence"), v.span(), t);
            s.finish(ctx, PERSISTENCE_KEYS, &no_hint);
            match s.get("mode") {
                Some(m) => {
                    let m = choice(ctx, "mode", m, PERSISTENCE_MODES)?;
                    (m.v, m.span, Some(t))
                }
                None => (PersistenceMode::None, v.span(), Some(t)),
            }
        }
        other => {
            ctx.error(
                &v.span(),
                format!(
                    "`persistence` must be a table like {{ mode = \"source-ip\" }} or a mode name, found {}",
                    crate::reader::kind(other)
                ),
            );
            return None;
        }
    };
    let mut p = persistence_for(mode);
    let mut ok = true;
    if mode == PersistenceMode::HttpCookie && service_mode == Some(Mode::Tcp) {
        ctx.error(
            &mode_span,
            format!(
                "http-cookie persistence needs mode = \"http\" ({service} is in tcp mode; use source-ip)"
            ),
        );
        ok = false;
    }
    let Some(t) = t else {
        return ok.then_some(p);
    };
    let s = Section::new(format!("{service} persistence"), v.span(), t);
    let mode_name = PERSISTENCE_MODES
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or("", |(n, _)| n);
    let applies = |key: &str| match key {
        "timeout_s" | "table_size" => {
            matches!(
                mode,
                PersistenceMode::SourceIp | PersistenceMode::LastSuccessful
            )
        }
        "cookie_name" => mode == PersistenceMode::HttpCookie,
        _ => true,
    };
    for key in ["timeout_s", "table_size", "cookie_name"] {
        let Some(value) = s.get(key) else { continue };
        if !applies(key) {
            let span = s.key_span(key).unwrap_or(value.span());
            let why = match key {
                "cookie_name" => "only http-cookie uses a cookie",
                _ if mode == PersistenceMode::HttpCookie => {
                    "the cookie carries the server; there is no table"
                }
                _ => "there is no persistence table",
            };
            ctx.error(
                &span,
                format!("`{key}` does not apply to persistence mode \"{mode_name}\" ({why})"),
            );
            ok = false;
            continue;
        }
        match key {
            "timeout_s" => match int_in(ctx, key, value, 0, 31_536_000, " s") {
                Some(a) => p.timeout_s = a.v,
                None => ok = false,
            },
            "table_size" => match int_in(ctx, key, value, 1, 10_000_000, " entries") {
                Some(a) => p.table_size = usize::try_from(a.v).unwrap_or(d::PERSISTENCE_TABLE_SIZE),
                None => ok = false,
            },
            _ => match string(ctx, key, value) {
                Some(name) if is_cookie_token(name.v) => p.cookie_name = name.v.to_string(),
                Some(name) => {
                    ctx.error(
                        &value.span(),
                        format!(
                            "`cookie_name` = \"{}\" is not a valid cookie name (1-64 letters, digits, '-', '_', '.')",
                            name.v
                        ),
                    );
                    ok = false;
                }
                None => ok = false,
            },
        }
    }
    ok.then_some(p)
}

fn is_cookie_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
