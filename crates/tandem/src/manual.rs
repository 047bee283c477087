//! `tandem generate-manual DIR` (hidden): writes the manual pages and shell completions that the Debian package
//! installs, generated from the same clap definitions the binary parses, so they cannot drift from the real
//! options. Owns the page layout (section 8, one page per subcommand, the FILES and SEE ALSO sections) and the
//! completion file names; `deploy/debian/build-package` gzips the pages and cargo-deb puts everything in place.
//!
//! Layout written under DIR:
//! - `man/tandem.8`, `man/tandem-SUBCOMMAND.8` for every visible subcommand (nested ones as `tandem-a-b.8`);
//! - `completions/tandem.bash`, `completions/_tandem` (zsh), `completions/tandem.fish`.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The section every page goes in: `tandem` is a system daemon and its administration tool.
const SECTION: &str = "8";

/// The completion files, named as bash-completion, zsh's vendor-completions and fish's vendor_completions.d
/// look them up (the package renames the bash one to plain `tandem`).
const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "tandem.bash"),
    (Shell::Zsh, "_tandem"),
    (Shell::Fish, "tandem.fish"),
];

/// Writes the pages and completions under `dir` (created if missing) and prints each file written.
pub fn generate(dir: &Path) -> Result<ExitCode> {
    for file in write_all(dir)? {
        println!("{}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// What [`generate`] writes, returned as the list of files (tests read them back).
fn write_all(dir: &Path) -> Result<Vec<PathBuf>> {
    let man_dir = dir.join("man");
    let completion_dir = dir.join("completions");
    for sub in [&man_dir, &completion_dir] {
        std::fs::create_dir_all(sub).with_context(|| format!("creating {}", sub.display()))?;
    }
    let mut written = Vec::new();
    // The `help` subcommand is clap's own: `--help` on every page says the same.
    let mut command = crate::Cli::command().disable_help_subcommand(true);
    command.build();
    write_pages(&command, &man_dir, &mut written)?;
    let mut command = visible_only(Box::leak(Box::new(crate::Cli::command())));
    for (shell, name) in COMPLETIONS {
        let path = completion_dir.join(name);
        let mut buffer = Vec::new();
        clap_complete::generate(shell, &mut command, "tandem", &mut buffer);
        std::fs::write(&path, buffer).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A copy of `command` without its hidden subcommands and options, for the completion scripts: clap_complete
/// offers hidden ones too (`generate-manual`, `password --iterations`), and clap has no way to remove a
/// subcommand or an option from a `Command`. `command` is `'static` because clap (without its `string` feature)
/// names commands with `&'static str`: the caller leaks one `Command`, once, in a process that exits right after.
fn visible_only(command: &'static clap::Command) -> clap::Command {
    let mut copy = clap::Command::new(command.get_name())
        .args(
            command
                .get_arguments()
                .filter(|arg| !arg.is_hide_set())
                .cloned(),
        )
        .subcommands(
            command
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .map(visible_only),
        );
    if let Some(about) = command.get_about() {
        copy = copy.about(about.clone());
    }
    if let Some(version) = command.get_version() {
        copy = copy.version(version);
    }
    copy
}

/// The page of `command` and, recursively, one page per visible subcommand. `command` must be built (clap
/// then names subcommands `tandem-status` and copies the global options into each).
fn write_pages(command: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    let name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_owned();
    let man = Man::new(command.clone())
        .title(name.to_uppercase())
        .section(SECTION)
        .date(page_date())
        .source(format!("tandem {}", env!("CARGO_PKG_VERSION")))
        .manual("tandem manual");
    let mut page = Vec::new();
    man.render(&mut page)?;
    let is_top = command.get_name() == "tandem";
    trailer(&name, is_top).to_writer(&mut page)?;
    let path = dir.join(format!("{name}.{SECTION}"));
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}

/// The pages' date (`.TH`'s third field; clap_mangen leaves an empty one unquoted, which shifts the source and
/// manual fields): the day of `SOURCE_DATE_EPOCH` (build-package sets the commit's time, so one commit gives the
/// same pages), else today.
fn page_date() -> String {
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|value| value.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(0))
        });
    iso_date(seconds.div_euclid(86_400))
}

/// `days` since 1970-01-01 as YYYY-MM-DD, proleptic Gregorian (Howard Hinnant's `civil_from_days`).
fn iso_date(days: i64) -> String {
    let (year, month, day) = tandem_types::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// FILES (on the main page) and SEE ALSO, which clap has no place for.
fn trailer(name: &str, is_top: bool) -> Roff {
    use tandem_config::node_defaults as defaults;
    let mut roff = Roff::new();
    if is_top {
        roff.control("SH", ["FILES"]);
        let files = [
            (
                "/etc/tandem/cluster.toml".to_owned(),
                "The replicated configuration: virtual services, real servers, health checks, heartbeat timings. \
                 Edited on the primary; the secondary receives it.",
            ),
            (
                "/etc/tandem/node.toml".to_owned(),
                "This node's identity, role, addresses, peer, admin endpoint and state directory. Never replicated.",
            ),
            (
                format!("/etc/tandem/{}", defaults::SECRET_FILE),
                "The shared secret of the pair (written by tandem keygen; owner tandem, mode 0600).",
            ),
            (
                defaults::STATE_DIR.to_owned(),
                "State kept across restarts: configuration generations, admin states.",
            ),
            (
                defaults::ADMIN_SOCKET.to_owned(),
                "The local admin socket the CLI uses on the node itself.",
            ),
            (
                "/usr/share/doc/tandem/examples/".to_owned(),
                "An OpenStack example pair and the nftables snippet for the heartbeat and sync ports.",
            ),
        ];
        for (path, what) in files {
            roff.control("TP", []);
            roff.text([italic(path)]);
            roff.text([roman(what)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut see_also = Vec::new();
    if !is_top {
        see_also.push(bold("tandem"));
        see_also.push(roman(format!("({SECTION}), ")));
    }
    if name == "tandem" || name == "tandem-run" {
        see_also.push(bold("systemctl"));
        see_also.push(roman("(1), "));
        see_also.push(bold("systemd.exec"));
        see_also.push(roman("(5), "));
    }
    see_also.push(roman("/usr/share/doc/tandem/"));
    roff.text(see_also);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_subcommand_in_section_8_and_three_completions() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let written = write_all(dir.path())?;
        let pages: Vec<String> = std::fs::read_dir(dir.path().join("man"))?
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        let expected: Vec<String> = crate::Cli::command()
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(|sub| format!("tandem-{}.8", sub.get_name()))
            .chain(["tandem.8".to_owned()])
            .collect();
        for page in &expected {
            assert!(pages.contains(page), "{page} missing from {pages:?}");
        }
        assert_eq!(pages.len(), expected.len(), "{pages:?}");
        assert!(
            !pages
                .iter()
                .any(|page| page.contains("generate-manual") || page == "tandem-help.8"),
            "hidden or clap's help subcommand got a page: {pages:?}"
        );
        assert_eq!(written.len(), pages.len() + COMPLETIONS.len());
        Ok(())
    }

    #[test]
    fn pages_name_their_command_its_options_and_the_files() -> Result<()> {
        let dir = tempfile::tempdir()?;
        write_all(dir.path())?;
        let top = std::fs::read_to_string(dir.path().join("man/tandem.8"))?;
        // Five fields: title, section, date, source, manual (an empty date would shift the last two).
        let title_line = format!(
            ".TH TANDEM 8 {} \"tandem {}\" \"tandem manual\"",
            page_date(),
            env!("CARGO_PKG_VERSION")
        );
        assert!(top.contains(&title_line), "{title_line} not in {top}");
        assert!(top.contains("tandem\\-status(8)"), "subcommand list: {top}");
        assert!(
            top.contains(".SH FILES") && top.contains("/etc/tandem/node.toml"),
            "{top}"
        );
        let status = std::fs::read_to_string(dir.path().join("man/tandem-status.8"))?;
        assert!(status.contains(".TH TANDEM-STATUS 8"), "{status}");
        // Global options are documented on each subcommand's page too.
        assert!(
            status.contains("\\-\\-config\\-dir") && status.contains("\\-\\-json"),
            "{status}"
        );
        assert!(!status.contains(".SH FILES"), "{status}");
        let password = std::fs::read_to_string(dir.path().join("man/tandem-password.8"))?;
        assert!(
            !password.contains("iterations"),
            "a hidden option is documented: {password}"
        );
        Ok(())
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(-1), "1969-12-31");
        assert_eq!(iso_date(11_016), "2000-02-29");
        assert_eq!(iso_date(19_723), "2024-01-01");
        assert_eq!(iso_date(20_793), "2026-12-06");
    }

    #[test]
    fn completions_offer_the_subcommands_but_not_the_hidden_one() -> Result<()> {
        let dir = tempfile::tempdir()?;
        write_all(dir.path())?;
        for (_, name) in COMPLETIONS {
            let script = std::fs::read_to_string(dir.path().join("completions").join(name))?;
            assert!(
                script.contains("status") && script.contains("keygen"),
                "{name}: {script}"
            );
            assert!(
                !script.contains("generate-manual"),
                "{name} offers the hidden subcommand"
            );
            assert!(
                !script.contains("iterations"),
                "{name} offers a hidden option"
            );
            assert!(
                script.contains("config-dir"),
                "{name} lacks the global options"
            );
        }
        Ok(())
    }
}
