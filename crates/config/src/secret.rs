//! The shared secret that authenticates heartbeats and sync frames (HMAC-SHA256 key).
//!
//! `keygen` writes 32 random bytes from ring's `SystemRandom` as 64 hex characters and a
//! newline, to a new file with mode 0600 (never overwriting). `load_secret` reads a secret
//! file: the key is the file's content without trailing whitespace, as bytes, at least 32 bytes
//! long. A secret file that group or others can read or write is refused (not just warned about):
//! anyone who reads the key can forge heartbeats and sync frames, anyone who writes it can make
//! the pair stop trusting each other. `check_private` applies the same rule to any other
//! credential file (the admin password file).

use ring::rand::{SecureRandom, SystemRandom};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use tandem_types::{MIN_SECRET_LEN, Secret};

/// Random bytes `keygen` draws.
pub const KEYGEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{}: secret file not found (create it with `tandem keygen {}` and copy it to the peer)", .0.display(), .0.display())]
    Missing(PathBuf),
    #[error("{}: already exists; refusing to overwrite a secret (remove it first if you mean it)", .0.display())]
    Exists(PathBuf),
    #[error("{}: secret file is empty", .0.display())]
    Empty(PathBuf),
    #[error("{}: secret is too short ({len} bytes; at least {MIN_SECRET_LEN} needed, `tandem keygen` makes a good one)", .path.display())]
    TooShort { path: PathBuf, len: usize },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{}: {} (mode {:o}); a secret must be private to its owner: run `chmod 600 {}`",
        .path.display(), exposure(*.mode), .mode & 0o777, .path.display()
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("system random number generator failed")]
    Random,
}

impl SecretError {
    /// Whether `check` and `run` must refuse the configuration even where a missing or weak
    /// secret is tolerated (a standalone node, an example directory): a file others can read or
    /// write is a leak today, whatever the node does with it.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SecretError::NotPrivate { .. })
    }
}

/// Permission bits that make a credential file someone else's business: read or write by
/// group or others (execute alone leaks nothing).
const NOT_PRIVATE_BITS: u32 = 0o066;

/// "readable by everyone", "readable and writable by its group", ...: the widest class first.
fn exposure(mode: u32) -> String {
    let (bits, who) = if mode & 0o006 != 0 {
        (mode & 0o007, "everyone")
    } else {
        ((mode >> 3) & 0o007, "its group")
    };
    let what = match (bits & 0o4 != 0, bits & 0o2 != 0) {
        (true, true) => "readable and writable",
        (true, false) => "readable",
        (false, true) => "writable",
        (false, false) => "accessible",
    };
    format!("{what} by {who}")
}

/// Who besides the owner may read or write a file of this mode ("everyone" before "its
/// group"), or `None` for a private file: the one rule for every credential file.
pub(crate) fn exposed_to(mode: u32) -> Option<&'static str> {
    if mode & 0o006 != 0 {
        Some("everyone")
    } else if mode & NOT_PRIVATE_BITS != 0 {
        Some("its group")
    } else {
        None
    }
}

/// Refuses a credential file (secret, password) that group or others can read or write.
/// Follows symlinks: the mode that counts is the target's.
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    check_mode(path, &meta)
}

fn check_mode(path: &Path, meta: &fs::Metadata) -> Result<(), SecretError> {
    let mode = meta.permissions().mode();
    if exposed_to(mode).is_some() {
        return Err(SecretError::NotPrivate {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn io_error(path: &Path, e: io::Error) -> SecretError {
    match e.kind() {
        io::ErrorKind::NotFound => SecretError::Missing(path.to_path_buf()),
        _ => SecretError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// A new random secret as `keygen` writes it (without the newline): `KEYGEN_BYTES` from the
/// system generator, in hex.
pub fn generate() -> Result<String, SecretError> {
    let mut bytes = [0u8; KEYGEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    Ok(hex::encode(bytes))
}

/// Creates `path` holding a new random secret (mode 0600, `O_EXCL`: refuses to overwrite).
pub fn keygen(path: &Path) -> Result<(), SecretError> {
    let text = format!("{}\n", generate()?);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => SecretError::Exists(path.to_path_buf()),
            _ => SecretError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Do not leave a half-written secret behind.
        let _ = fs::remove_file(path);
        return Err(SecretError::Io {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}

/// Reads the secret in `path`; refuses a file group or others can read or write.
pub fn load_secret(path: &Path) -> Result<Secret, SecretError> {
    // The mode is read from the open file, so a file swapped after the check is not the one read.
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        // `check` run by someone who may not read the file: its mode can still be wrong.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            check_private(path)?;
            return Err(io_error(path, e));
        }
        Err(e) => return Err(io_error(path, e)),
    };
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    check_mode(path, &meta)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let key = &bytes[..end];
    if key.is_empty() {
        return Err(SecretError::Empty(path.to_path_buf()));
    }
    if key.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort {
            path: path.to_path_buf(),
            len: key.len(),
        });
    }
    Secret::new(key).map_err(|short| SecretError::TooShort {
        path: path.to_path_buf(),
        len: short.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_private(path: &Path, text: &str) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn keygen_writes_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        keygen(&p).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.trim_end().chars().all(|c| c.is_ascii_hexdigit()));
        let loaded = load_secret(&p).unwrap();
        assert_eq!(loaded.expose(), text.trim_end().as_bytes());
        assert!(matches!(keygen(&p), Err(SecretError::Exists(_))));
        assert_eq!(fs::read_to_string(&p).unwrap(), text, "untouched");
        // Two keys differ.
        let q = dir.path().join("other");
        keygen(&q).unwrap();
        assert_ne!(fs::read_to_string(&q).unwrap(), text);
    }

    #[test]
    fn load_secret_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = load_secret(&missing).unwrap_err();
        assert!(matches!(e, SecretError::Missing(_)));
        assert!(e.to_string().contains("tandem keygen"));

        let empty = dir.path().join("empty");
        write_private(&empty, "  \n");
        assert!(matches!(load_secret(&empty), Err(SecretError::Empty(_))));

        let short = dir.path().join("short");
        write_private(&short, "hunter2\n");
        let e = load_secret(&short).unwrap_err();
        assert!(matches!(e, SecretError::TooShort { len: 7, .. }), "{e}");

        let good = dir.path().join("good");
        write_private(&good, &"x".repeat(40));
        let loaded = load_secret(&good).unwrap();
        assert_eq!(format!("{loaded:?}"), "Secret(40 bytes, redacted)");
        // Read-only for the owner and an execute bit leak nothing.
        for mode in [0o400, 0o700, 0o711] {
            fs::set_permissions(&good, fs::Permissions::from_mode(mode)).unwrap();
            assert!(load_secret(&good).is_ok(), "mode {mode:o}");
            assert!(check_private(&good).is_ok(), "mode {mode:o}");
        }
    }

    #[test]
    fn a_secret_others_can_read_or_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::write(&open, "x".repeat(40)).unwrap();
        for (mode, says) in [
            (0o644, "readable by everyone"),
            (0o666, "readable and writable by everyone"),
            (0o602, "writable by everyone"),
            (0o640, "readable by its group"),
            (0o660, "readable and writable by its group"),
            (0o620, "writable by its group"),
        ] {
            fs::set_permissions(&open, fs::Permissions::from_mode(mode)).unwrap();
            let e = load_secret(&open).unwrap_err();
            assert!(matches!(e, SecretError::NotPrivate { .. }), "{e}");
            assert!(e.is_fatal());
            let text = e.to_string();
            assert!(text.contains(says), "{mode:o}: {text}");
            assert!(text.contains(&format!("(mode {mode:o})")), "{text}");
            assert!(
                text.contains(&format!("chmod 600 {}", open.display())),
                "{text}"
            );
            assert!(
                !text.contains(&"x".repeat(40)),
                "no secret byte in the message"
            );
            assert!(matches!(
                check_private(&open),
                Err(SecretError::NotPrivate { .. })
            ));
        }
        // The other errors stay tolerable where a missing secret is.
        assert!(
            !load_secret(&dir.path().join("nope"))
                .unwrap_err()
                .is_fatal()
        );
        assert!(matches!(
            check_private(&dir.path().join("nope")),
            Err(SecretError::Missing(_))
        ));
    }
}
