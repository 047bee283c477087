//! The daemon's log (`[log]` of node.toml): human-readable lines on standard error, or straight to
//! journald with each event's priority when systemd started us (so `journalctl -p warning -u
//! tandem` shows failovers, a lost peer, servers going down and rejected heartbeats), or one JSON
//! object per line for a log shipper. `TANDEM_LOG` (e.g. `debug`, `tandem=debug`) sets the level.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use tandem_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the process's subscriber; call once, before the runtime starts.
pub fn init(config: &LogConfig) {
    match config.format {
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .try_init();
        }
        LogFormat::Text => {
            if stderr_is_the_journal() {
                match tracing_journald::layer() {
                    Ok(journal) => {
                        let _ = tracing_subscriber::registry()
                            .with(filter())
                            .with(journal.with_syslog_identifier("tandem".to_string()))
                            .try_init();
                        return;
                    }
                    // No journald socket (a container without it): stderr still reaches the journal.
                    Err(error) => {
                        eprintln!("tandem: journald unavailable ({error}); logging to stderr")
                    }
                }
            }
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose stderr is connected to the journal;
/// it counts only when stderr still is that stream (not redirected by a wrapper).
fn stderr_is_the_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => journal_stream_is(&stream, meta.dev(), meta.ino()),
        Err(_) => false,
    }
}

/// Whether `JOURNAL_STREAM`'s `DEV:INODE` names the file `dev`/`ino`.
fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::journal_stream_is;

    #[test]
    fn journal_stream_must_name_stderr_exactly() {
        assert!(journal_stream_is("9:12345", 9, 12345));
        assert!(!journal_stream_is("9:12345", 9, 12346));
        assert!(!journal_stream_is("8:12345", 9, 12345));
        assert!(!journal_stream_is("", 9, 12345));
        assert!(!journal_stream_is("9", 9, 12345));
        assert!(!journal_stream_is("x:y", 9, 12345));
    }
}
