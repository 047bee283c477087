//! Basic authentication against the password file's PBKDF2 hash, at a bounded cost.
//!
//! A PBKDF2 verification costs ~100+ ms of one core by design. The page refreshes every few
//! seconds and the CLI sends the same header on every call, so an `Authorization` value once
//! verified is remembered (by its SHA-256, for a while) and later requests with it cost a hash.
//! Wrong guesses cannot burn the CPU: verifications run one at a time, and failures draw on a
//! small bucket (10, refilled one per 6 s); once empty, requests get 429 without a verification
//! until it refills. A remembered value still passes, so the operator keeps working during a
//! guessing attack (and the UNIX socket never asks).

use base64::Engine;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_config::password::PasswordHash;

/// The configured user and the hash of its password.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub hash: PasswordHash,
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
}

pub(crate) struct Authenticator {
    credentials: Option<Arc<Credentials>>,
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
        Self {
            credentials: credentials.map(Arc::new),
            state: Mutex::new(State {
                remembered: Vec::new(),
                tokens: FAILURE_BURST,
                refilled: Instant::now(),
            }),
            gate: tokio::sync::Semaphore::new(1),
        }
    }

    pub(crate) fn configured(&self) -> bool {
        self.credentials.is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks an `Authorization` header value.
    pub(crate) async fn check(&self, header: Option<&[u8]>) -> Verdict {
        let Some(credentials) = self.credentials.clone() else {
            return Verdict::Missing;
        };
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
        {
            let mut state = self.state();
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
        }
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
}
