//! The admin password file (`[admin] password_file`): a salted PBKDF2-HMAC-SHA256 hash, never the
//! password itself.
//!
//! The file holds one self-describing line, `$pbkdf2-sha256$i=ITERATIONS$SALT$HASH` (salt and hash
//! in base64 without padding), written by `tandem password FILE` ([`write_password_file`]) with
//! mode 0600. [`load_password_file`] refuses a file readable or writable by group or others and a
//! file that holds no hash (a clear-text password). [`PasswordHash::verify`] compares in constant
//! time (ring's `pbkdf2::verify`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};
use std::fs;
use std::io::{self, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What `tandem password` uses: OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Fewer is refused: a stolen file would be cheap to attack.
pub const MIN_ITERATIONS: u32 = 10_000;
/// More is refused: every verification would cost seconds of CPU.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// The scheme tag that starts every line.
pub const SCHEME: &str = "$pbkdf2-sha256$";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: already exists; use --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error(
        "{}: readable or writable by {who} (mode {mode:o}); chmod 600 it (owned by the user the daemon runs as)",
        .path.display()
    )]
    Open {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error(
        "{}: holds no password hash (a clear-text password?); write it with `tandem password {}`",
        .0.display(), .0.display()
    )]
    NotAHash(PathBuf),
    #[error("{}: malformed password hash: {reason}; write it again with `tandem password --force {}`", .path.display(), .path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("the password is empty")]
    Empty,
    #[error("iterations must be within {MIN_ITERATIONS}..={MAX_ITERATIONS}")]
    Iterations,
    #[error("system random number generator failed")]
    Random,
}

/// A parsed password hash line.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

impl std::fmt::Debug for PasswordHash {
    // The hash is not the password, but it need not reach a log either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PasswordHash(pbkdf2-sha256, i={}, redacted)",
            self.iterations
        )
    }
}

impl PasswordHash {
    /// Hashes `password` under a fresh random salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<Self, PasswordError> {
        if password.is_empty() {
            return Err(PasswordError::Empty);
        }
        let iterations = checked_iterations(iterations).ok_or(PasswordError::Iterations)?;
        let mut salt = vec![0u8; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| PasswordError::Random)?;
        let mut hash = [0u8; HASH_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password,
            &mut hash,
        );
        Ok(Self {
            iterations,
            salt,
            hash,
        })
    }

    /// Parses one line as written by [`PasswordHash::encode`]; the error says what is wrong.
    pub fn parse(line: &str) -> Result<Self, String> {
        let rest = line
            .trim()
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("does not start with {SCHEME}"))?;
        let mut parts = rest.split('$');
        let (Some(iterations), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("expected i=ITERATIONS$SALT$HASH after the scheme".into());
        };
        let iterations = iterations
            .strip_prefix("i=")
            .and_then(|i| i.parse::<u32>().ok())
            .and_then(checked_iterations)
            .ok_or_else(|| {
                format!("iterations must be i=N with N in {MIN_ITERATIONS}..={MAX_ITERATIONS}")
            })?;
        let salt = STANDARD_NO_PAD
            .decode(salt)
            .map_err(|_| "the salt is not base64".to_string())?;
        if salt.len() < 8 {
            return Err("the salt is shorter than 8 bytes".into());
        }
        let hash: [u8; HASH_LEN] = STANDARD_NO_PAD
            .decode(hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| format!("the hash is not {HASH_LEN} bytes of base64"))?;
        Ok(Self {
            iterations,
            salt,
            hash,
        })
    }

    /// The file's line (without newline).
    pub fn encode(&self) -> String {
        format!(
            "{SCHEME}i={}${}${}",
            self.iterations,
            STANDARD_NO_PAD.encode(&self.salt),
            STANDARD_NO_PAD.encode(self.hash)
        )
    }

    /// Whether `password` is the one hashed; constant time in where they differ.
    pub fn verify(&self, password: &[u8]) -> bool {
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            self.iterations,
            &self.salt,
            password,
            &self.hash,
        )
        .is_ok()
    }

    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }
}

fn checked_iterations(i: u32) -> Option<NonZeroU32> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&i) {
        NonZeroU32::new(i)
    } else {
        None
    }
}

/// Writes the hash of `password` to `path` with mode 0600. Refuses an existing file unless
/// `force`; a forced write replaces the file atomically (a temporary file renamed over it).
pub fn write_password_file(
    path: &Path,
    password: &[u8],
    iterations: u32,
    force: bool,
) -> Result<(), PasswordError> {
    let line = format!("{}\n", PasswordHash::new(password, iterations)?.encode());
    let io_err = |source: io::Error| PasswordError::Io {
        path: path.to_path_buf(),
        source,
    };
    let target = if force {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        path.with_file_name(name)
    } else {
        path.to_path_buf()
    };
    if force {
        // A leftover from an interrupted run; create_new below must succeed.
        let _ = fs::remove_file(&target);
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => PasswordError::Exists(path.to_path_buf()),
            _ => io_err(e),
        })?;
    let written = file
        .write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            if force {
                fs::rename(&target, path)
            } else {
                Ok(())
            }
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&target);
        return Err(io_err(e));
    }
    Ok(())
}

/// Reads and checks a password file: not open to group or others, and holding a hash.
pub fn load_password_file(path: &Path) -> Result<PasswordHash, PasswordError> {
    let io_err = |source: io::Error| PasswordError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    let mode = meta.permissions().mode() & 0o777;
    if let Some(who) = crate::secret::exposed_to(mode) {
        return Err(PasswordError::Open {
            path: path.to_path_buf(),
            who,
            mode,
        });
    }
    let bytes = fs::read(path).map_err(io_err)?;
    let text = String::from_utf8_lossy(&bytes);
    let line = text.trim();
    if !line.starts_with(SCHEME) {
        return Err(PasswordError::NotAHash(path.to_path_buf()));
    }
    PasswordHash::parse(line).map_err(|reason| PasswordError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hash_round_trips_and_verifies() {
        let hash = PasswordHash::new(b"correct horse", MIN_ITERATIONS).unwrap();
        let line = hash.encode();
        assert!(line.starts_with("$pbkdf2-sha256$i=10000$"), "{line}");
        assert!(!line.contains("correct horse"));
        let parsed = PasswordHash::parse(&line).unwrap();
        assert_eq!(parsed, hash);
        assert!(parsed.verify(b"correct horse"));
        assert!(!parsed.verify(b"correct horsE"));
        assert!(!parsed.verify(b""));
        // Two hashes of one password differ (fresh salt).
        let again = PasswordHash::new(b"correct horse", MIN_ITERATIONS).unwrap();
        assert_ne!(again.encode(), line);
        assert_eq!(
            format!("{hash:?}"),
            "PasswordHash(pbkdf2-sha256, i=10000, redacted)"
        );
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        for (line, reason) in [
            ("hunter2", "does not start"),
            ("$pbkdf2-sha256$i=5$AAAAAAAAAAA$AAAA", "iterations"),
            ("$pbkdf2-sha256$i=20000$!!$AAAA", "salt"),
            ("$pbkdf2-sha256$i=20000$AAAAAAAAAAA$AAAA", "hash"),
            ("$pbkdf2-sha256$i=20000$AAAAAAAAAAA", "expected"),
        ] {
            let error = PasswordHash::parse(line).unwrap_err();
            assert!(error.contains(reason), "{line}: {error}");
        }
        assert!(matches!(
            PasswordHash::new(b"", MIN_ITERATIONS),
            Err(PasswordError::Empty)
        ));
        assert!(matches!(
            PasswordHash::new(b"x", 1),
            Err(PasswordError::Iterations)
        ));
    }

    #[test]
    fn file_is_0600_refuses_overwrite_and_checks_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.pw");
        write_password_file(&path, b"s3cret-pass", MIN_ITERATIONS, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret-pass"));
        assert!(load_password_file(&path).unwrap().verify(b"s3cret-pass"));

        let again = write_password_file(&path, b"other", MIN_ITERATIONS, false);
        assert!(matches!(again, Err(PasswordError::Exists(_))));
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "untouched");
        write_password_file(&path, b"other", MIN_ITERATIONS, true).unwrap();
        assert!(load_password_file(&path).unwrap().verify(b"other"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let error = load_password_file(&path).unwrap_err();
        assert!(matches!(error, PasswordError::Open { .. }), "{error}");
        assert!(error.to_string().contains("its group"), "{error}");

        let clear = dir.path().join("clear");
        fs::write(&clear, "hunter2\n").unwrap();
        fs::set_permissions(&clear, fs::Permissions::from_mode(0o600)).unwrap();
        let error = load_password_file(&clear).unwrap_err();
        assert!(error.to_string().contains("tandem password"), "{error}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
