//! Basic authentication against the password file's PBKDF2 hash, at a bounded cost.
//!
//! A PBKDF2 verification costs ~100+ ms of one core by design. The page refreshes every few
//! seconds and the CLI sends the same header on every call, so an `Authorization` value once
//! verified is remembered (by its SHA-256, for a while) and later requests with it cost a hash.
//! Wrong guesses cannot burn the CPU: verifications run one at a time, and failures draw on a
//! small bucket (10, refilled one per 6 s); once empty, requests get 429 without a verification
//! until it refills. A remembered value still passes, so the operator keeps working during a
//! guessing attack (and the UNIX socket never asks).
//!
//! The password file is looked at (one `stat`) on every check: when `tandem password --force`
//! replaced it, the new hash applies at once and every remembered value is forgotten.

use base64::Engine;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_config::password::PasswordHash;

/// The configured user and the hash of its password.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub hash: PasswordHash,
    /// The password file the hash came from: re-read when it changes.
    pub file: Option<PathBuf>,
}

/// What identifies one version of the password file: inode, size, modification time.
type Stamp = (u64, u64, i64, i64);

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()))
}

/// How long a verified `Authorization` value is remembered.
const REMEMBER: Duration = Duration::from_secs(15 * 60);
/// At most this many remembered values (oldest forgotten first).
const REMEMBERED: usize = 32;
/// Failed verifications allowed in a burst, and the time to earn one back.
const FAILURE_BURST: f64 = 10.0;
const FAILURE_REFILL: Duration = Duration::from_secs(6);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Granted,
    /// No `Authorization` header, or not Basic.
    Missing,
    Wrong,
    /// Too many recent failures: not even tried.
    Throttled,
}

type Digest = [u8; 32];

struct State {
    remembered: Vec<(Digest, Instant)>,
    tokens: f64,
    refilled: Instant,
    /// The credentials in force (the hash changes with the file).
    credentials: Option<Arc<Credentials>>,
    file_stamp: Option<Stamp>,
}

pub(crate) struct Authenticator {
    configured: bool,
    state: Mutex<State>,
    /// One PBKDF2 verification at a time.
    gate: tokio::sync::Semaphore,
}

fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

impl Authenticator {
    pub(crate) fn new(credentials: Option<Credentials>) -> Self {
        let file_stamp = credentials
            .as_ref()
            .and_then(|c| c.file.as_deref())
            .and_then(stamp);
        Self {
            configured: credentials.is_some(),
            state: Mutex::new(State {
                remembered: Vec::new(),
                tokens: FAILURE_BURST,
                refilled: Instant::now(),
                credentials: credentials.map(Arc::new),
                file_stamp,
            }),
            gate: tokio::sync::Semaphore::new(1),
        }
    }

    pub(crate) fn configured(&self) -> bool {
        self.configured
    }

    /// The credentials in force, after re-reading a password file that changed. A file that
    /// became unreadable or invalid keeps the previous hash (and says so once).
    fn current(&self, state: &mut State) -> Option<Arc<Credentials>> {
        let credentials = state.credentials.clone()?;
        let Some(file) = credentials.file.as_deref() else {
            return Some(credentials);
        };
        let now = stamp(file);
        if now == state.file_stamp {
            return Some(credentials);
        }
        state.file_stamp = now;
        match tandem_config::password::load_password_file(file) {
            Ok(hash) => {
                tracing::info!(path = %file.display(), "admin password file changed: new password in force");
                state.remembered.clear();
                let renewed = Arc::new(Credentials {
                    hash,
                    ..(*credentials).clone()
                });
                state.credentials = Some(renewed.clone());
                Some(renewed)
            }
            Err(error) => {
                tracing::error!(%error, "admin password file changed but cannot be used; the previous password stays in force");
                Some(credentials)
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks an `Authorization` header value.
    pub(crate) async fn check(&self, header: Option<&[u8]>) -> Verdict {
        let Some(header) = header else {
            return Verdict::Missing;
        };
        let Some(encoded) = header
            .strip_prefix(b"Basic ")
            .or_else(|| header.strip_prefix(b"basic "))
        else {
            return Verdict::Missing;
        };
        let key = sha256(header);
        let now = Instant::now();
        let credentials = {
            let mut state = self.state();
            let Some(credentials) = self.current(&mut state) else {
                return Verdict::Missing;
            };
            state.remembered.retain(|(_, at)| now < *at + REMEMBER);
            if state.remembered.iter().any(|(digest, _)| *digest == key) {
                return Verdict::Granted;
            }
            let earned =
                now.duration_since(state.refilled).as_secs_f64() / FAILURE_REFILL.as_secs_f64();
            state.tokens = (state.tokens + earned).min(FAILURE_BURST);
            state.refilled = now;
            if state.tokens < 1.0 {
                return Verdict::Throttled;
            }
            credentials
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim_ascii())
            .unwrap_or_default();
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            self.failed();
            return Verdict::Wrong;
        };
        let (user, password) = (decoded[..colon].to_vec(), decoded[colon + 1..].to_vec());
        let Ok(_permit) = self.gate.acquire().await else {
            return Verdict::Throttled;
        };
        let verified = tokio::task::spawn_blocking(move || {
            // Both are always computed, so the time says nothing about which one was wrong.
            let password_ok = credentials.hash.verify(&password);
            let user_ok = sha256(&user) == sha256(credentials.user.as_bytes());
            password_ok && user_ok
        })
        .await
        .unwrap_or(false);
        if verified {
            let mut state = self.state();
            if state.remembered.len() >= REMEMBERED {
                state.remembered.remove(0);
            }
            state.remembered.push((key, now));
            Verdict::Granted
        } else {
            self.failed();
            Verdict::Wrong
        }
    }

    fn failed(&self) {
        let mut state = self.state();
        state.tokens = (state.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
        .into_bytes()
    }

    fn authenticator() -> Authenticator {
        Authenticator::new(Some(Credentials {
            user: "ops".into(),
            hash: PasswordHash::new(b"pa:ss", tandem_config::password::MIN_ITERATIONS).unwrap(),
            file: None,
        }))
    }

    #[tokio::test]
    async fn verifies_remembers_and_throttles_failures() {
        let auth = authenticator();
        assert_eq!(auth.check(None).await, Verdict::Missing);
        assert_eq!(auth.check(Some(&b"Bearer x"[..])).await, Verdict::Missing);
        assert_eq!(
            auth.check(Some(&basic("ops", "pa:ss"))).await,
            Verdict::Granted
        );
        assert_eq!(auth.state().remembered.len(), 1);
        assert_eq!(
            auth.check(Some(&basic("ops", "pa:ss"))).await,
            Verdict::Granted
        );
        assert_eq!(
            auth.check(Some(&basic("root", "pa:ss"))).await,
            Verdict::Wrong
        );
        for _ in 0..9 {
            assert_eq!(
                auth.check(Some(&basic("ops", "guess"))).await,
                Verdict::Wrong
            );
        }
        // The bucket is empty: no more verifications, but the remembered value still passes.
        assert_eq!(
            auth.check(Some(&basic("ops", "guess"))).await,
            Verdict::Throttled
        );
        assert_eq!(
            auth.check(Some(&basic("ops", "pa:ss"))).await,
            Verdict::Granted
        );
        assert_eq!(
            auth.check(Some(&b"Basic !!!"[..])).await,
            Verdict::Throttled
        );
    }

    #[tokio::test]
    async fn without_credentials_nothing_is_granted() {
        let auth = Authenticator::new(None);
        assert!(!auth.configured());
        assert_eq!(
            auth.check(Some(&basic("ops", "pa:ss"))).await,
            Verdict::Missing
        );
    }

    #[tokio::test]
    async fn a_replaced_password_file_applies_at_once() {
        use tandem_config::password::{MIN_ITERATIONS, load_password_file, write_password_file};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.pw");
        write_password_file(&file, b"old", MIN_ITERATIONS, false).unwrap();
        let auth = Authenticator::new(Some(Credentials {
            user: "ops".into(),
            hash: load_password_file(&file).unwrap(),
            file: Some(file.clone()),
        }));
        assert_eq!(
            auth.check(Some(&basic("ops", "old"))).await,
            Verdict::Granted
        );
        write_password_file(&file, b"new", MIN_ITERATIONS, true).unwrap();
        assert_eq!(auth.check(Some(&basic("ops", "old"))).await, Verdict::Wrong);
        assert_eq!(
            auth.check(Some(&basic("ops", "new"))).await,
            Verdict::Granted
        );
        // A broken file keeps the password in force.
        std::fs::write(&file, "clear text\n").unwrap();
        assert_eq!(
            auth.check(Some(&basic("ops", "new"))).await,
            Verdict::Granted
        );
    }
}
