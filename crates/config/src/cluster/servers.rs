//! A service's `[[service.server]]` list: each real server, and the duplicates among them.

use super::defaults as d;
use super::misplaced::misplaced_in_section;
use crate::diag::Ctx;
use crate::model::*;
use crate::reader::{At, Section, int_in, ip, label, port, table};
use std::net::IpAddr;
use toml::de::DeValue;

const SERVER_KEYS: &[&str] = &["label", "address", "port", "weight"];

/// A server's label and (address, port) as read, for duplicate checks.
type SeenServer = (Option<At<String>>, Option<(At<IpAddr>, Option<u16>)>);

pub(super) fn read_servers(
    ctx: &mut Ctx<'_>,
    s: &Section<'_, '_>,
    service: &str,
    ports: &[At<u16>],
) -> Option<Vec<Server>> {
    let Some(v) = s.get("server") else {
        ctx.warn(
            &s.span,
            format!(
                "{service} has no [[service.server]]: its clients go to the fallback or are refused"
            ),
        );
        return Some(Vec::new());
    };
    let items = match v.get_ref() {
        DeValue::Array(items) => items,
        DeValue::Table(_) => {
            ctx.error(
                &v.span(),
                "`server` must be an array of tables: write [[service.server]], not [service.server]",
            );
            return None;
        }
        other => {
            ctx.error(
                &v.span(),
                format!(
                    "`server` must be an array of tables ([[service.server]]), found {}",
                    crate::reader::kind(other)
                ),
            );
            return None;
        }
    };
    let mut ok = true;
    let mut servers = Vec::new();
    // (label, address, port) as read, for duplicate checks.
    let mut seen: Vec<SeenServer> = Vec::new();
    for item in items.iter() {
        let Some(t) = table(ctx, "server", item) else {
            ok = false;
            continue;
        };
        let head = Section::new(format!("{service} server"), item.span(), t);
        let lbl = head
            .required(ctx, "label")
            .and_then(|l| label(ctx, "label", l));
        let name = match &lbl {
            Some(l) => format!("{service} server \"{}\"", l.v),
            None => format!("{service} server"),
        };
        let ss = Section::new(name, item.span(), t);
        ss.finish(ctx, SERVER_KEYS, &misplaced_in_section);
        let address = ss
            .required(ctx, "address")
            .and_then(|a| ip(ctx, "address", a));
        let port_v = match ss.get("port") {
            Some(p) => match port(ctx, "port", p) {
                Some(p) => Some(Some(p.v)),
                None => None,
            },
            None => Some(None),
        };
        let weight = match ss.get("weight") {
            Some(w) => int_in(ctx, "weight", w, 0, u64::from(d::MAX_WEIGHT), "")
                .and_then(|a| u32::try_from(a.v).ok()),
            None => Some(d::WEIGHT),
        };

        if let Some(l) = &lbl
            && let Some(first) = seen
                .iter()
                .filter_map(|(fl, _)| fl.as_ref())
                .find(|fl| fl.v == l.v)
        {
            let line = ctx.line_of(&first.span);
            ctx.error(
                &l.span,
                format!(
                    "server \"{}\" is listed twice in {service} (first at line {line})",
                    l.v
                ),
            );
            ok = false;
        }
        if let (Some(addr), Some(p)) = (&address, port_v) {
            let clash = seen.iter().find_map(|(fl, fa)| {
                let (fa, fp) = fa.as_ref()?;
                if fa.v != addr.v {
                    return None;
                }
                // Same target for some VIP port: both translate to the same port, or one
                // translates to a port the other reaches untranslated.
                let same = match (fp, p) {
                    (None, None) => true,
                    (Some(a), Some(b)) => *a == b,
                    (Some(x), None) => ports.iter().any(|q| q.v == *x),
                    (None, Some(x)) => ports.iter().any(|q| q.v == x),
                };
                same.then(|| (fl.clone(), fa.span.clone()))
            });
            if let Some((first_label, first_span)) = clash {
                let line = ctx.line_of(&first_span);
                let target = match p {
                    Some(p) => format!("{}:{p}", fmt_ip(addr.v)),
                    None => format!("{} (on the VIP port)", addr.v),
                };
                let other = first_label.map_or(String::new(), |fl| format!(" as \"{}\"", fl.v));
                ctx.error(
                    &addr.span,
                    format!(
                        "server {target} is listed twice in {service} (first{other} at line {line})"
                    ),
                );
                ok = false;
            }
        }
        seen.push((lbl.clone(), address.clone().zip(port_v)));
        match (lbl, address, port_v, weight) {
            (Some(l), Some(a), Some(p), Some(w)) => servers.push(Server {
                label: l.v,
                address: a.v,
                port: p,
                weight: w,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(servers)
}

pub(crate) fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
