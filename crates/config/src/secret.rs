//! The shared secret that authenticates heartbeats and sync frames (HMAC-SHA256 key).
//!
//! `keygen` writes 32 random bytes from ring's `SystemRandom` as 64 hex characters and a
//! newline, to a new file with mode 0600 (never overwriting). `load_secret` reads a secret
//! file: the key is the file's content without trailing whitespace, as bytes, at least 32 bytes
//! long; it warns when the file is readable by group or others.

use ring::rand::{SecureRandom, SystemRandom};
use std::fs;
use std::io::{self, Write};
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
    #[error("system random number generator failed")]
    Random,
}

/// A loaded secret with any warnings about its file.
#[derive(Debug)]
pub struct LoadedSecret {
    pub secret: Secret,
    pub warnings: Vec<String>,
}

/// Creates `path` holding a new random secret (mode 0600, `O_EXCL`: refuses to overwrite).
pub fn keygen(path: &Path) -> Result<(), SecretError> {
    let mut bytes = [0u8; KEYGEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    let text = format!("{}\n", hex::encode(bytes));
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

/// Reads the secret in `path`.
pub fn load_secret(path: &Path) -> Result<LoadedSecret, SecretError> {
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => SecretError::Missing(path.to_path_buf()),
        _ => SecretError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    let bytes = fs::read(path).map_err(io_err)?;
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
    let mut warnings = Vec::new();
    let mode = meta.permissions().mode();
    if mode & 0o044 != 0 {
        warnings.push(format!(
            "{}: secret file is readable by {} (mode {:o}); chmod 600 it",
            path.display(),
            if mode & 0o004 != 0 {
                "everyone"
            } else {
                "its group"
            },
            mode & 0o777
        ));
    }
    Ok(LoadedSecret {
        secret: Secret::new(key).map_err(|short| SecretError::TooShort {
            path: path.to_path_buf(),
            len: short.0,
        })?,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(loaded.warnings.is_empty());
        assert_eq!(loaded.secret.expose(), text.trim_end().as_bytes());
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
        fs::write(&empty, "  \n").unwrap();
        assert!(matches!(load_secret(&empty), Err(SecretError::Empty(_))));

        let short = dir.path().join("short");
        fs::write(&short, "hunter2\n").unwrap();
        let e = load_secret(&short).unwrap_err();
        assert!(matches!(e, SecretError::TooShort { len: 7, .. }), "{e}");

        let open = dir.path().join("open");
        fs::write(&open, "x".repeat(40)).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = load_secret(&open).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].contains("everyone"),
            "{:?}",
            loaded.warnings
        );
        assert_eq!(format!("{:?}", loaded.secret), "Secret(40 bytes, redacted)");
    }
}
