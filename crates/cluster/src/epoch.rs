//! Boot epochs: one number per process start, increasing across restarts, so the peer's replay guard accepts a
//! restarted node at once and refuses datagrams recorded before the restart.
//!
//! The epoch is `max(clock, last + 1)`, where `last` is the highest epoch this node ever used, kept in a state file
//! that is written and fsynced (file and directory) before the epoch is used: a crash right after start-up, or a
//! power cut, cannot make the next start go behind it, even with the wall clock stepped back. If the file is lost
//! while the clock is behind the last run, the new epoch is lower than the one the peer last accepted: the peer
//! refuses it as `stale` until the old epoch has been silent for its dead time and a heartbeat of the new one
//! acknowledges a recent heartbeat of the peer's (see [`crate::wire::ReplayGuard`] and docs/protocol.md).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn clock_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A boot epoch that also survives a wall clock stepping backwards: `max(clock, last + 1)`, remembered in
/// `state_file` (e.g. `<state_dir>/boot-epoch`) and fsynced before it is returned. A missing or unreadable file
/// counts as "no previous epoch".
pub fn next_boot_epoch(state_file: &Path) -> io::Result<u64> {
    next_boot_epoch_at(state_file, clock_epoch())
}

/// [`next_boot_epoch`] with the clock given (tests).
pub fn next_boot_epoch_at(state_file: &Path, clock: u64) -> io::Result<u64> {
    let previous = std::fs::read_to_string(state_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let epoch = clock.max(previous.saturating_add(1));
    persist(state_file, epoch)?;
    Ok(epoch)
}

/// Writes `epoch` to a temporary file, fsyncs it, renames it over `state_file` and fsyncs the directory, so after a
/// crash the file holds either the old or the new epoch, never nothing or half of one.
fn persist(state_file: &Path, epoch: u64) -> io::Result<()> {
    let tmp = state_file.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(format!("{epoch}\n").as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, state_file)?;
    let dir = match state_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-epoch-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn epochs_increase_even_if_the_clock_goes_back() {
        let dir = temp_dir("back");
        let file = dir.join("boot_epoch");
        let first = next_boot_epoch(&file).unwrap();
        assert!(first >= clock_epoch() - 10_000_000);
        // Pretend the previous run happened far in the future (clock stepped back since).
        std::fs::write(&file, format!("{}\n", u64::MAX - 5)).unwrap();
        assert_eq!(next_boot_epoch(&file).unwrap(), u64::MAX - 4);
        std::fs::write(&file, "garbage").unwrap();
        assert!(next_boot_epoch(&file).unwrap() >= first);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_highest_epoch_used_is_kept_and_never_gone_behind() {
        let dir = temp_dir("highest");
        let file = dir.join("boot-epoch");
        assert_eq!(next_boot_epoch_at(&file, 5_000).unwrap(), 5_000);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "5000\n");
        // The clock is behind the last run: last + 1, and that is what is kept.
        assert_eq!(next_boot_epoch_at(&file, 1_000).unwrap(), 5_001);
        assert_eq!(next_boot_epoch_at(&file, 1_000).unwrap(), 5_002);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "5002\n");
        // The clock ahead again: the clock.
        assert_eq!(next_boot_epoch_at(&file, 9_000).unwrap(), 9_000);
        assert!(
            !file.with_extension("tmp").exists(),
            "no temporary file left"
        );
        // The file lost while the clock is behind: the epoch goes back (the peer's replay guard lets it in after
        // its dead time, see wire::ReplayGuard), and from then on increases again.
        std::fs::remove_file(&file).unwrap();
        assert_eq!(next_boot_epoch_at(&file, 1_000).unwrap(), 1_000);
        assert_eq!(next_boot_epoch_at(&file, 1_000).unwrap(), 1_001);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_state_dir_is_an_error() {
        let missing = std::env::temp_dir()
            .join(format!("tandem-epoch-missing-{}", std::process::id()))
            .join("sub/boot-epoch");
        assert!(next_boot_epoch(&missing).is_err());
    }
}
