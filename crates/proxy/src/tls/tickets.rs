//! Session-ticket keys shared by the pair: each TLS service's ticket key for a rotation period is derived from
//! the cluster's shared secret (the `secret` file both nodes hold), so a ticket one node issued resumes on the
//! other after a failover, with no message on the wire. [`TicketSecret`] is the root; [`SharedTicketer`] is the
//! `rustls::server::ProducesTickets` of one service.
//!
//! Hand-written because rustls' own ticketer (`rustls::crypto::ring::Ticketer`) draws a random key per process
//! and rotation, which two processes cannot share; the cryptography is ring's (HKDF-SHA256, ChaCha20-Poly1305), as
//! in rustls' ticketer.
//!
//! # Keys, rotation and the ticket
//! - key(service, period) = HKDF-SHA256(salt = [`HKDF_SALT`], secret) expanded with
//!   `"tandem-tls-tickets v1 " || service label || 0x00 || period (u64, big-endian)`: a distinct salt and label
//!   keep it apart from every other key taken from the secret; the service label keeps one service's tickets from
//!   resuming on another.
//! - period = wall-clock Unix seconds / [`TICKET_KEY_PERIOD_S`] (6 hours, as rustls' rotation): new tickets use
//!   the current period's key; a ticket of the current or the previous period is accepted (and of the next, for
//!   clocks a little apart at a boundary); older ones are refused (a full handshake follows).
//! - ticket = version (1) || period (8) || nonce (12, random) || ChaCha20-Poly1305(plain) with tag (16); the first
//!   9 bytes are the associated data. Anything malformed, of another version, out of the window or failing
//!   authentication decrypts to `None`.
//!
//! # What it costs
//! A key that can be derived again is never erased: whoever reads the secret file can decrypt every recorded
//! ticket, and with a TLS 1.2 ticket the session it resumes (TLS 1.3 resumption in rustls always runs a new
//! ECDHE, `psk_dhe_ke`). That is the trade-off of every shared ticket-key file (HAProxy's `tls-ticket-keys`,
//! nginx's `ssl_session_ticket_key`); the secret file is already the pair's most private file (mode 0600).

use std::sync::Arc;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use crate::shared::lock;

/// Length of one rotation period of the ticket keys, seconds.
pub const TICKET_KEY_PERIOD_S: u64 = 6 * 60 * 60;
/// HKDF salt of the ticket keys: none of the secret's other uses takes this one.
pub const HKDF_SALT: &[u8] = b"tandem-tls-tickets salt v1";
const HKDF_LABEL: &[u8] = b"tandem-tls-tickets v1 ";
const VERSION: u8 = 1;
/// Version and period: the associated data.
const HEADER: usize = 1 + 8;
const NONCE: usize = aead::NONCE_LEN;
const TAG: usize = 16;
/// Derived keys kept at once: the window is three periods wide.
const CACHED_KEYS: usize = 3;

/// Seconds since the Unix epoch, as the ticket keys' period counts them.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The root of the session-ticket keys: the cluster's shared secret, extracted once.
#[derive(Clone)]
pub struct TicketSecret {
    prk: hkdf::Prk,
}

impl std::fmt::Debug for TicketSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSecret(..)")
    }
}

impl TicketSecret {
    /// From the bytes of the pair's shared secret (`tandem_types::Secret::expose`).
    pub fn from_cluster_secret(secret: &[u8]) -> TicketSecret {
        TicketSecret {
            prk: hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret),
        }
    }

    /// The ticketer of the TLS service `service`, on the wall clock.
    pub(crate) fn ticketer(&self, service: &str) -> Arc<dyn ProducesTickets> {
        Arc::new(SharedTicketer::new(self, service, Arc::new(wall_clock)))
    }
}

fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One service's tickets, sealed with the key of the current period and opened with the key the ticket names.
pub struct SharedTicketer {
    prk: hkdf::Prk,
    service: String,
    clock: WallClock,
    rng: SystemRandom,
    /// Keys derived so far: (period, key), at most [`CACHED_KEYS`].
    keys: std::sync::Mutex<Vec<(u64, Arc<LessSafeKey>)>>,
}

impl std::fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTicketer")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl SharedTicketer {
    /// The ticketer of `service`, its periods counted on `clock`.
    pub fn new(secret: &TicketSecret, service: &str, clock: WallClock) -> SharedTicketer {
        SharedTicketer {
            prk: secret.prk.clone(),
            service: service.to_owned(),
            clock,
            rng: SystemRandom::new(),
            keys: std::sync::Mutex::new(Vec::with_capacity(CACHED_KEYS)),
        }
    }

    fn period_now(&self) -> u64 {
        (self.clock)() / TICKET_KEY_PERIOD_S
    }

    /// The key of `period`, derived once and kept while it is among the newest [`CACHED_KEYS`].
    fn key(&self, period: u64) -> Option<Arc<LessSafeKey>> {
        let mut keys = lock(&self.keys);
        if let Some((_, key)) = keys.iter().find(|(p, _)| *p == period) {
            return Some(key.clone());
        }
        let period_bytes = period.to_be_bytes();
        let info = [HKDF_LABEL, self.service.as_bytes(), &[0], &period_bytes];
        // expand fails only for outputs over 255 hash blocks; a 32-byte key is not.
        let okm = self.prk.expand(&info, &aead::CHACHA20_POLY1305).ok()?;
        let key = Arc::new(LessSafeKey::new(UnboundKey::from(okm)));
        let oldest = keys
            .iter()
            .enumerate()
            .min_by_key(|(_, (p, _))| *p)
            .map(|(i, _)| i);
        if let Some(i) = oldest.filter(|_| keys.len() >= CACHED_KEYS) {
            keys.swap_remove(i);
        }
        keys.push((period, key.clone()));
        Some(key)
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    /// A hint to clients: a ticket is accepted for one to two periods after it was issued.
    fn lifetime(&self) -> u32 {
        u32::try_from(2 * TICKET_KEY_PERIOD_S).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let period = self.period_now();
        let key = self.key(period)?;
        let mut nonce = [0u8; NONCE];
        self.rng.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(HEADER + NONCE + plain.len() + TAG);
        ticket.push(VERSION);
        ticket.extend_from_slice(&period.to_be_bytes());
        ticket.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&ticket[..HEADER]),
            &mut sealed,
        )
        .ok()?;
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (header, rest) = ticket.split_at_checked(HEADER)?;
        let (version, period) = header.split_first()?;
        if *version != VERSION {
            return None;
        }
        let period = u64::from_be_bytes(period.try_into().ok()?);
        let now = self.period_now();
        if period < now.saturating_sub(1) || period > now.saturating_add(1) {
            return None;
        }
        let (nonce, sealed) = rest.split_at_checked(NONCE)?;
        if sealed.len() < TAG {
            return None;
        }
        let key = self.key(period)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = sealed.to_vec();
        let plain_len = key
            .open_in_place(nonce, Aad::from(header), &mut buffer)
            .ok()?
            .len();
        buffer.truncate(plain_len);
        Some(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A ticketer of service `web` from `secret` on a clock the test moves.
    fn ticketer(secret: &[u8], service: &str) -> (SharedTicketer, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(1_800_000_000));
        let clock = now.clone();
        let t = SharedTicketer::new(
            &TicketSecret::from_cluster_secret(secret),
            service,
            Arc::new(move || clock.load(Ordering::Relaxed)),
        );
        (t, now)
    }

    #[test]
    fn two_instances_of_the_same_secret_accept_each_others_tickets() {
        let (a, _) = ticketer(SECRET, "web");
        let (b, _) = ticketer(SECRET, "web");
        let plain = b"session state".to_vec();
        let from_a = a.encrypt(&plain).expect("a ticket");
        assert_ne!(&from_a[HEADER + NONCE..], plain.as_slice(), "sealed");
        assert_eq!(b.decrypt(&from_a), Some(plain.clone()));
        assert_eq!(a.decrypt(&b.encrypt(&plain).unwrap()), Some(plain.clone()));
        // Fresh nonces: the same state never gives the same ticket.
        assert_ne!(a.encrypt(&plain), a.encrypt(&plain));
        assert_eq!(a.decrypt(&a.encrypt(b"").unwrap()), Some(Vec::new()));
        assert!(a.enabled());
        assert_eq!(a.lifetime(), 43_200);
    }

    #[test]
    fn another_secret_or_another_service_refuses_them() {
        let (a, _) = ticketer(SECRET, "web");
        let (other_secret, _) = ticketer(b"fedcba9876543210fedcba9876543210", "web");
        let (other_service, _) = ticketer(SECRET, "api");
        let ticket = a.encrypt(b"state").unwrap();
        assert_eq!(other_secret.decrypt(&ticket), None);
        assert_eq!(other_service.decrypt(&ticket), None);
    }

    #[test]
    fn the_previous_period_is_accepted_and_older_ones_refused() {
        let (a, now) = ticketer(SECRET, "web");
        let (b, b_now) = ticketer(SECRET, "web");
        let ticket = a.encrypt(b"state").unwrap();
        let start = now.load(Ordering::Relaxed);
        // One period later (the other node's clock): still accepted; two: refused.
        b_now.store(start + TICKET_KEY_PERIOD_S, Ordering::Relaxed);
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        b_now.store(start + 2 * TICKET_KEY_PERIOD_S, Ordering::Relaxed);
        assert_eq!(b.decrypt(&ticket), None);
        // A node whose clock is one period behind still takes it; two behind does not.
        b_now.store(start - TICKET_KEY_PERIOD_S, Ordering::Relaxed);
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        b_now.store(start - 2 * TICKET_KEY_PERIOD_S, Ordering::Relaxed);
        assert_eq!(b.decrypt(&ticket), None);
        // New tickets use the new period's key, and the cache keeps working across many periods.
        for i in 1..10 {
            now.store(start + i * TICKET_KEY_PERIOD_S, Ordering::Relaxed);
            let fresh = a.encrypt(b"later").unwrap();
            assert_eq!(a.decrypt(&fresh).as_deref(), Some(&b"later"[..]));
            assert_eq!(
                u64::from_be_bytes(fresh[1..HEADER].try_into().unwrap()),
                (start / TICKET_KEY_PERIOD_S) + i
            );
        }
        assert!(lock(&a.keys).len() <= CACHED_KEYS);
    }

    #[test]
    fn a_changed_period_or_byte_is_refused() {
        let (a, _) = ticketer(SECRET, "web");
        let ticket = a.encrypt(b"state").unwrap();
        // Claiming the neighbouring period (inside the window) does not move the ticket there: the header is
        // authenticated, and the key is another.
        let mut moved = ticket.clone();
        moved[HEADER - 1] ^= 1;
        assert_eq!(a.decrypt(&moved), None);
        for i in 0..ticket.len() {
            let mut flipped = ticket.clone();
            flipped[i] ^= 0x80;
            assert_eq!(a.decrypt(&flipped), None, "byte {i}");
        }
    }

    #[test]
    fn garbage_and_truncated_tickets_are_none_without_panic() {
        let (a, _) = ticketer(SECRET, "web");
        let ticket = a.encrypt(b"state").unwrap();
        for len in 0..ticket.len() {
            assert_eq!(a.decrypt(&ticket[..len]), None, "truncated to {len}");
        }
        let mut longer = ticket.clone();
        longer.push(0);
        assert_eq!(a.decrypt(&longer), None);
        assert_eq!(a.decrypt(&[0xff; 200]), None);
        let mut far = vec![VERSION];
        far.extend_from_slice(&u64::MAX.to_be_bytes());
        far.extend_from_slice(&[0; NONCE + TAG]);
        assert_eq!(a.decrypt(&far), None);
        let mut zero = vec![VERSION];
        zero.extend_from_slice(&0u64.to_be_bytes());
        zero.extend_from_slice(&[0; NONCE + TAG + 4]);
        assert_eq!(a.decrypt(&zero), None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decrypt_to_none_or_a_sealed_state(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let (a, _) = ticketer(SECRET, "web");
            proptest::prop_assert_eq!(a.decrypt(&bytes), None);
        }
    }
}
