//! `[hooks]` of `node.toml`: commands run on cluster transitions (like keepalived's
//! `notify_master`/`notify_backup`/`notify_fault`), read and checked with `file:line:col` errors.

use crate::diag::Ctx;
use crate::reader::{Section, Val, array, int_in, string, table};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `[hooks] timeout_ms` when not set.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// What can happen to this node that a hook may be told about (the `on_*` keys of `[hooks]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    /// This node became active (holds the VIPs).
    Active,
    /// This node became standby.
    Standby,
    /// This node entered fault (adding or removing the VIPs failed).
    Fault,
    /// The peer fell silent for longer than `dead_ms`.
    PeerLost,
    /// The peer was heard (first time, or again after it was lost).
    PeerFound,
}

impl HookEvent {
    pub const ALL: [HookEvent; 5] = [
        HookEvent::Active,
        HookEvent::Standby,
        HookEvent::Fault,
        HookEvent::PeerLost,
        HookEvent::PeerFound,
    ];

    /// The `[hooks]` key naming its command.
    pub fn key(self) -> &'static str {
        match self {
            HookEvent::Active => "on_active",
            HookEvent::Standby => "on_standby",
            HookEvent::Fault => "on_fault",
            HookEvent::PeerLost => "on_peer_lost",
            HookEvent::PeerFound => "on_peer_found",
        }
    }

    /// The event as a hook sees it (its first argument and `TANDEM_EVENT`).
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::Active => "active",
            HookEvent::Standby => "standby",
            HookEvent::Fault => "fault",
            HookEvent::PeerLost => "peer-lost",
            HookEvent::PeerFound => "peer-found",
        }
    }
}

/// `[hooks]`: commands run when this node's cluster state changes, like keepalived's `notify_master`,
/// `notify_backup` and `notify_fault`. Each command is an argv array run without a shell; the daemon appends the
/// event, the node's new state and the reason, and sets them in the environment too (docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hooks {
    pub on_active: Option<Vec<String>>,
    pub on_standby: Option<Vec<String>>,
    pub on_fault: Option<Vec<String>>,
    pub on_peer_lost: Option<Vec<String>>,
    pub on_peer_found: Option<Vec<String>>,
    /// A hook still running after this long is killed with its whole process group.
    pub timeout_ms: u64,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            on_active: None,
            on_standby: None,
            on_fault: None,
            on_peer_lost: None,
            on_peer_found: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

impl Hooks {
    /// The argv configured for `event`, if any.
    pub fn command(&self, event: HookEvent) -> Option<&[String]> {
        match event {
            HookEvent::Active => self.on_active.as_deref(),
            HookEvent::Standby => self.on_standby.as_deref(),
            HookEvent::Fault => self.on_fault.as_deref(),
            HookEvent::PeerLost => self.on_peer_lost.as_deref(),
            HookEvent::PeerFound => self.on_peer_found.as_deref(),
        }
    }

    fn slot(&mut self, event: HookEvent) -> &mut Option<Vec<String>> {
        match event {
            HookEvent::Active => &mut self.on_active,
            HookEvent::Standby => &mut self.on_standby,
            HookEvent::Fault => &mut self.on_fault,
            HookEvent::PeerLost => &mut self.on_peer_lost,
            HookEvent::PeerFound => &mut self.on_peer_found,
        }
    }

    /// No hook configured.
    pub fn is_empty(&self) -> bool {
        HookEvent::ALL.iter().all(|e| self.command(*e).is_none())
    }
}

/// Limits of `[hooks]`: a hook that needs more than five minutes holds up every hook queued behind it.
pub const MAX_HOOK_TIMEOUT_MS: u64 = 300_000;
/// Arguments per hook command, and bytes per argument: a typo, not a command, beyond these.
const MAX_HOOK_ARGS: usize = 64;
const MAX_HOOK_ARG_BYTES: usize = 4096;

fn hook_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = HookEvent::ALL.iter().map(|e| e.key()).collect();
    keys.push("timeout_ms");
    keys
}

/// keepalived's names, and other keys an operator coming from it may write.
fn misplaced_in_hooks(key: &str) -> Option<String> {
    let instead = match key {
        "notify_master" | "on_master" | "master" => "on_active",
        "notify_backup" | "on_backup" | "backup" => "on_standby",
        "notify_fault" => "on_fault",
        "notify" | "notify_stop" => {
            return Some(format!(
                "`{key}` is keepalived's; tandem runs one command per event (on_active, on_standby, on_fault, \
                 on_peer_lost, on_peer_found) and passes the event as the first argument, so the same script \
                 may be named in several of them"
            ));
        }
        "timeout" | "timeout_s" | "notify_timeout" => "timeout_ms",
        _ => return None,
    };
    Some(format!(
        "unknown key `{key}` in [hooks]; tandem calls it `{instead}`"
    ))
}

/// `[hooks]`: defaults (nothing run) when absent; `None` when something in it is wrong (reported).
pub(crate) fn read_hooks(ctx: &mut Ctx<'_>, v: Option<&Val<'_>>) -> Option<Hooks> {
    let mut hooks = Hooks::default();
    let Some(v) = v else {
        return Some(hooks);
    };
    let t = table(ctx, "hooks", v)?;
    let s = Section::new("[hooks]", v.span(), t);
    let errors_before = ctx.diags.errors.len();
    s.finish(ctx, &hook_keys(), &misplaced_in_hooks);
    for event in HookEvent::ALL {
        if let Some(command) = s.get(event.key()) {
            *hooks.slot(event) = hook_command(ctx, event.key(), command);
        }
    }
    if let Some(t) = s.get("timeout_ms").and_then(|t| {
        int_in(
            ctx,
            "timeout_ms",
            t,
            1,
            MAX_HOOK_TIMEOUT_MS,
            " ms; hooks run one at a time, so a long one delays the next",
        )
    }) {
        hooks.timeout_ms = t.v;
    }
    (ctx.diags.errors.len() == errors_before).then_some(hooks)
}

/// One hook command: an argv array whose first element is an absolute path. A program that is missing or not
/// executable is a warning, not an error: the load balancer must start even when a notification script is not
/// installed yet (or `tandem check` runs on another machine); the daemon logs the failure each time the hook runs.
fn hook_command(ctx: &mut Ctx<'_>, key: &str, v: &Val<'_>) -> Option<Vec<String>> {
    if let Some(text) = v.get_ref().as_str() {
        ctx.error(
            &v.span(),
            format!(
                "`{key}` = \"{text}\" is a string; a hook is an argv array run without a shell, e.g. \
                 [\"/usr/local/sbin/lb-notify\", \"--quiet\"] (for shell syntax say so: [\"/bin/sh\", \"-c\", \"...\"])"
            ),
        );
        return None;
    }
    let items = array(ctx, key, v)?;
    if items.is_empty() {
        ctx.error(
            &v.span(),
            format!(
                "`{key}` is empty: give the command as an argv array, e.g. [\"/usr/local/sbin/lb-notify\"], \
                 or leave the key out"
            ),
        );
        return None;
    }
    if items.len() > MAX_HOOK_ARGS {
        ctx.error(
            &v.span(),
            format!(
                "`{key}` has {} elements; at most {MAX_HOOK_ARGS} (use a script for more)",
                items.len()
            ),
        );
        return None;
    }
    let mut argv = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let Some(arg) = string(ctx, key, item) else {
            ok = false;
            continue;
        };
        if arg.v.contains('\0') {
            ctx.error(
                &item.span(),
                format!("`{key}`: an argument cannot contain a NUL character"),
            );
            ok = false;
        } else if arg.v.len() > MAX_HOOK_ARG_BYTES {
            ctx.error(
                &item.span(),
                format!("`{key}`: an argument longer than {MAX_HOOK_ARG_BYTES} bytes"),
            );
            ok = false;
        }
        argv.push(arg.v.to_string());
    }
    if !ok {
        return None;
    }
    let program = Path::new(&argv[0]);
    let program_span = items[0].span();
    if !program.is_absolute() {
        ctx.error(
            &program_span,
            format!(
                "`{key}`: the program \"{}\" must be an absolute path (hooks are run without a shell and without \
                 a PATH search), e.g. \"/usr/local/sbin/{}\"",
                argv[0],
                program
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "lb-notify".into())
            ),
        );
        return None;
    }
    match std::fs::metadata(program) {
        Err(error) => ctx.warn(
            &program_span,
            format!(
                "`{key}`: {} {}; the hook will fail each time it runs",
                program.display(),
                if error.kind() == std::io::ErrorKind::NotFound {
                    "does not exist".to_string()
                } else {
                    format!("cannot be looked at ({error})")
                }
            ),
        ),
        Ok(meta) if !meta.is_file() => ctx.warn(
            &program_span,
            format!(
                "`{key}`: {} is not a regular file; the hook will fail each time it runs",
                program.display()
            ),
        ),
        Ok(meta) if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 => {
            ctx.warn(
                &program_span,
                format!(
                    "`{key}`: {} is not executable (chmod +x); the hook will fail each time it runs",
                    program.display()
                ),
            )
        }
        Ok(_) => {}
    }
    Some(argv)
}

#[cfg(test)]
mod hooks_tests {
    #![allow(clippy::unwrap_used)]
    use super::{HookEvent, Hooks};
    use crate::diag::{Ctx, Diagnostics};
    use crate::node::parse;
    use std::os::unix::fs::PermissionsExt;

    const NODE: &str =
        "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"10.0.0.1\"\nmanage_vips = false\n";

    /// node.toml with `hooks` appended: the config (if accepted) and every diagnostic as `file:line:col: text`.
    fn read(hooks: &str) -> (Option<Hooks>, Vec<String>, Vec<String>) {
        let text = format!("{NODE}{hooks}");
        let mut ctx = Ctx::new("node.toml", &text);
        let parsed = parse(&mut ctx, &text, None);
        let config = parsed.and_then(|p| p.config).filter(|_| !ctx.has_errors());
        let Diagnostics {
            errors, warnings, ..
        } = ctx.diags;
        (
            config.map(|c| c.hooks),
            errors.iter().map(ToString::to_string).collect(),
            warnings.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn absent_section_runs_nothing_with_the_default_timeout() {
        let (hooks, errors, warnings) = read("");
        let hooks = hooks.unwrap();
        assert!(errors.is_empty() && warnings.is_empty());
        assert!(hooks.is_empty());
        assert_eq!(hooks.timeout_ms, 10_000);
        assert_eq!(hooks, Hooks::default());
    }

    #[test]
    fn every_hook_is_read_as_an_argv_array() {
        let (hooks, errors, warnings) = read(
            "[hooks]\non_active = [\"/bin/sh\", \"-c\", \"echo $1\", \"x\"]\non_standby = [\"/bin/true\"]\n\
             on_fault = [\"/bin/true\", \"fault\"]\non_peer_lost = [\"/bin/true\"]\non_peer_found = [\"/bin/true\"]\n\
             timeout_ms = 2500\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
        let hooks = hooks.unwrap();
        assert_eq!(
            hooks.command(HookEvent::Active).unwrap(),
            ["/bin/sh", "-c", "echo $1", "x"]
        );
        assert_eq!(
            hooks.command(HookEvent::Fault).unwrap(),
            ["/bin/true", "fault"]
        );
        for event in HookEvent::ALL {
            assert!(hooks.command(event).is_some(), "{event:?}");
        }
        assert_eq!(hooks.timeout_ms, 2500);
    }

    #[test]
    fn a_shell_string_an_empty_array_and_a_relative_program_are_errors_at_their_value() {
        let (hooks, errors, _) = read(
            "[hooks]\non_active = \"/usr/local/bin/notify active\"\non_standby = []\non_fault = [\"notify\"]\n\
             on_peer_lost = [\"/bin/true\", 3]\n",
        );
        assert!(hooks.is_none());
        let all = errors.join("\n");
        assert!(
            all.contains("node.toml:7:13: `on_active` = \"/usr/local/bin/notify active\" is a string; a hook is an argv array"),
            "{all}"
        );
        assert!(
            all.contains("node.toml:8:14: `on_standby` is empty"),
            "{all}"
        );
        assert!(
            all.contains(
                "node.toml:9:13: `on_fault`: the program \"notify\" must be an absolute path"
            ),
            "{all}"
        );
        assert!(
            all.contains("node.toml:10:30: `on_peer_lost` must be a string, found an integer"),
            "{all}"
        );
        assert_eq!(errors.len(), 4, "{all}");
    }

    #[test]
    fn keepalived_names_and_typos_say_what_tandem_calls_them() {
        let (hooks, errors, _) = read(
            "[hooks]\nnotify_master = [\"/bin/true\"]\nnotify_backup = [\"/bin/true\"]\non_actve = [\"/bin/true\"]\n\
             timeout = 5\n",
        );
        assert!(hooks.is_none());
        let all = errors.join("\n");
        assert!(
            all.contains(
                "node.toml:7:1: unknown key `notify_master` in [hooks]; tandem calls it `on_active`"
            ),
            "{all}"
        );
        assert!(
            all.contains("`notify_backup`") && all.contains("`on_standby`"),
            "{all}"
        );
        assert!(
            all.contains(
                "node.toml:9:1: unknown key `on_actve` in [hooks]; did you mean `on_active`?"
            ),
            "{all}"
        );
        assert!(all.contains("tandem calls it `timeout_ms`"), "{all}");
    }

    #[test]
    fn the_timeout_is_bounded() {
        for bad in ["0", "300001", "-5", "\"10s\""] {
            let (hooks, errors, _) = read(&format!("[hooks]\ntimeout_ms = {bad}\n"));
            assert!(hooks.is_none(), "{bad}");
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("node.toml:7:14: `timeout_ms`")),
                "{bad}: {errors:?}"
            );
        }
        let (hooks, errors, _) = read("[hooks]\ntimeout_ms = 300000\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(hooks.unwrap().timeout_ms, 300_000);
    }

    #[test]
    fn a_missing_or_unexecutable_program_is_a_warning_and_the_node_still_starts() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("notify.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let missing = dir.path().join("not-there");
        let (hooks, errors, warnings) = read(&format!(
            "[hooks]\non_active = [\"{}\"]\non_standby = [\"{}\"]\non_fault = [\"{}\"]\n",
            script.display(),
            missing.display(),
            dir.path().display()
        ));
        assert!(errors.is_empty(), "{errors:?}");
        let hooks = hooks.unwrap();
        assert_eq!(
            hooks.command(HookEvent::Active).unwrap(),
            [script.display().to_string()]
        );
        let all = warnings.join("\n");
        assert!(
            all.contains("node.toml:7:14: `on_active`")
                && all.contains("not executable (chmod +x)"),
            "{all}"
        );
        assert!(
            all.contains("node.toml:8:15: `on_standby`")
                && all.contains("not-there does not exist"),
            "{all}"
        );
        assert!(
            all.contains("node.toml:9:13: `on_fault`") && all.contains("not a regular file"),
            "{all}"
        );
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (_, _, warnings) = read(&format!(
            "[hooks]\non_active = [\"{}\"]\n",
            script.display()
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn hooks_round_trip_through_serde_and_default_when_absent() {
        let (hooks, _, _) =
            read("[hooks]\non_peer_lost = [\"/bin/true\", \"lost\"]\ntimeout_ms = 700\n");
        let hooks = hooks.unwrap();
        let json = serde_json::to_string(&hooks).unwrap();
        assert_eq!(serde_json::from_str::<Hooks>(&json).unwrap(), hooks);
        assert_eq!(
            serde_json::from_str::<Hooks>("{}").unwrap(),
            Hooks::default()
        );
    }
}
