//! Boot epochs: one number per process start, increasing across restarts, so the peer's replay guard accepts a
//! restarted node at once and refuses datagrams recorded before the restart.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn clock_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A boot epoch that also survives a wall clock stepping backwards: `max(clock, last + 1)`, remembered in
/// `state_file` (e.g. `<state_dir>/boot_epoch`). A missing or unreadable file counts as "no previous epoch".
pub fn next_boot_epoch(state_file: &Path) -> io::Result<u64> {
    let previous = std::fs::read_to_string(state_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let epoch = clock_epoch().max(previous.saturating_add(1));
    let tmp = state_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{epoch}\n"))?;
    std::fs::rename(&tmp, state_file)?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_increase_even_if_the_clock_goes_back() {
        let dir = std::env::temp_dir().join(format!("tandem-epoch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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
}
