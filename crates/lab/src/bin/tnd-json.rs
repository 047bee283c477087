//! `tnd-json`: the lab scripts' JSON tool, so they need no jq.
//!
//! - `tnd-json obj key=string key:=RAW_JSON ...` prints one compact object (fields in the given order).
//! - `tnd-json get PATH [FILE]` prints the value at a dotted PATH (`a.b.0.c`; `tables.label=mysql.size` picks the
//!   array element whose `label` is `mysql`) of the JSON in FILE (or stdin):
//!   strings bare, everything else as JSON, `null` when absent. Exits 1 when the input is not JSON.
//! - `tnd-json mapdiff PATH BEFORE AFTER` compares the objects at PATH in two JSON files (e.g. the probe's
//!   `source_map`) and prints `{"before":n,"after":n,"compared":n,"changed":n,"missing":n}`: `changed` counts keys
//!   present in both with different values, `missing` keys of BEFORE absent from AFTER.
//! - `tnd-json settled [FILE]` reads a `tandem status --json` document and prints
//!   `{"servers":n,"settled":n,"up":n}`; exits 0 only when every real server's health is settled: it has been
//!   checked and its verdict agrees with its last check (a server between its first good check and `rise` is not).

use std::io::Read;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

fn obj(args: &[String]) -> Result<()> {
    let mut map = Map::new();
    for arg in args {
        if let Some((key, raw)) = arg.split_once(":=") {
            let value: Value = if raw.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(raw).with_context(|| format!("{key}: not JSON: {raw}"))?
            };
            map.insert(key.to_owned(), value);
        } else if let Some((key, text)) = arg.split_once('=') {
            map.insert(key.to_owned(), Value::String(text.to_owned()));
        } else {
            bail!("expected key=value or key:=json, got {arg}");
        }
    }
    println!("{}", Value::Object(map));
    Ok(())
}

fn read_input(file: Option<&String>) -> Result<String> {
    let mut text = String::new();
    match file {
        Some(f) => text = std::fs::read_to_string(f).with_context(|| format!("read {f}"))?,
        None => {
            std::io::stdin().read_to_string(&mut text)?;
        }
    }
    Ok(text)
}

/// The value at a dotted path of the first JSON value in `text`.
fn lookup(text: &str, path: &str) -> Result<Value> {
    // the first JSON value of the input (tolerates trailing lines)
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut value = match stream.next() {
        Some(v) => v.context("input is not JSON")?,
        None => bail!("empty input"),
    };
    for part in path.split('.').filter(|p| !p.is_empty()) {
        value = match value {
            Value::Object(mut m) => m.remove(part).unwrap_or(Value::Null),
            Value::Array(mut a) => match (part.parse::<usize>(), part.split_once('=')) {
                (Ok(i), _) if i < a.len() => a.swap_remove(i),
                // `key=value`: the first element whose `key` is that string (or number)
                (Err(_), Some((key, want))) => a
                    .into_iter()
                    .find(|item| {
                        item.get(key).is_some_and(|v| match v {
                            Value::String(s) => s == want,
                            Value::Number(n) => {
                                want.parse::<serde_json::Number>().is_ok_and(|w| &w == n)
                            }
                            Value::Bool(b) => want.parse::<bool>().is_ok_and(|w| w == *b),
                            _ => false,
                        })
                    })
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            },
            _ => Value::Null,
        };
    }
    Ok(value)
}

fn get(path: &str, file: Option<&String>) -> Result<()> {
    let value = lookup(&read_input(file)?, path)?;
    match value {
        Value::String(s) => println!("{s}"),
        other => println!("{other}"),
    }
    Ok(())
}

fn mapdiff(path: &str, before: &String, after: &String) -> Result<()> {
    let empty = Map::new();
    let a = lookup(&read_input(Some(before))?, path)?;
    let b = lookup(&read_input(Some(after))?, path)?;
    let a = a.as_object().unwrap_or(&empty);
    let b = b.as_object().unwrap_or(&empty);
    let (mut compared, mut changed, mut missing) = (0u64, 0u64, 0u64);
    for (key, value) in a {
        match b.get(key) {
            Some(other) => {
                compared += 1;
                if other != value {
                    changed += 1;
                }
            }
            None => missing += 1,
        }
    }
    println!(
        "{}",
        serde_json::json!({"before": a.len(), "after": b.len(), "compared": compared, "changed": changed, "missing": missing})
    );
    Ok(())
}

/// Whether every server of a status document has a settled health verdict (see the module doc).
fn settled(file: Option<&String>) -> Result<bool> {
    let status: Value = serde_json::from_str(&read_input(file)?).context("not JSON")?;
    let (mut servers, mut settled, mut up) = (0u64, 0u64, 0u64);
    let services = status["services"].as_array().map_or(&[][..], Vec::as_slice);
    for server in services
        .iter()
        .flat_map(|s| s["servers"].as_array().map_or(&[][..], Vec::as_slice))
    {
        servers += 1;
        let health_up = server["health"] == "up";
        up += u64::from(health_up);
        if server["last_check"]["ok"].as_bool() == Some(health_up) {
            settled += 1;
        }
    }
    println!(
        "{}",
        serde_json::json!({"servers": servers, "settled": settled, "up": up})
    );
    Ok(servers > 0 && settled == servers)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, rest)) if cmd == "obj" => obj(rest),
        Some((cmd, rest)) if cmd == "get" && !rest.is_empty() => get(&rest[0], rest.get(1)),
        Some((cmd, [path, before, after])) if cmd == "mapdiff" => mapdiff(path, before, after),
        Some((cmd, rest)) if cmd == "settled" && rest.len() <= 1 => {
            if settled(rest.first())? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        _ => bail!(
            "usage: tnd-json obj key=value key:=json ... | get PATH [FILE] | mapdiff PATH BEFORE AFTER | settled [FILE]"
        ),
    }
}
