//! From the SPAKE2 key to the session's keys: confirmations both ways and one sealing key per
//! direction.
//!
//! `prk = HKDF-SHA256-Extract(salt = SHA-256(transcript), ikm = SPAKE2 key)`; four keys are
//! expanded from it under distinct labels. The transcript is every byte both hellos and the
//! primary's key message put on the wire (length prefixes included), so a change to a name, an
//! address, the cluster name or a SPAKE2 message gives different keys and the confirmations
//! fail. A confirmation is HMAC-SHA256 over the transcript hash under its role's key: one side's
//! confirmation cannot be reflected back as the other's. Each sealing key seals exactly one
//! message (ChaCha20-Poly1305), so the all-zero nonce is never reused under a key.

use crate::wire::CONFIRM_LEN;
use ring::{aead, digest, hkdf, hmac};
use zeroize::Zeroizing;

const LABEL_CONFIRM_PRIMARY: &[u8] = b"tandem-pair/1 confirm primary";
const LABEL_CONFIRM_SECONDARY: &[u8] = b"tandem-pair/1 confirm secondary";
const LABEL_SEAL_TO_SECONDARY: &[u8] = b"tandem-pair/1 seal primary->secondary";
const LABEL_SEAL_TO_PRIMARY: &[u8] = b"tandem-pair/1 seal secondary->primary";
pub(crate) const AAD_PAYLOAD: &[u8] = b"tandem-pair/1 payload";
pub(crate) const AAD_OUTCOME: &[u8] = b"tandem-pair/1 outcome";

/// The session's keys, derived identically on both sides when both used the same code.
pub(crate) struct SessionKeys {
    transcript: [u8; 32],
    confirm_primary: hmac::Key,
    confirm_secondary: hmac::Key,
    seal_to_secondary: Zeroizing<[u8; 32]>,
    seal_to_primary: Zeroizing<[u8; 32]>,
}

/// Running SHA-256 over the frames that make up the transcript.
pub(crate) struct Transcript(digest::Context);

impl Transcript {
    pub fn new() -> Self {
        Transcript(digest::Context::new(&digest::SHA256))
    }
    pub fn add(&mut self, framed: &[u8]) {
        self.0.update(framed);
    }
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

fn expand(prk: &hkdf::Prk, label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 255 * 32 limit: expand and fill cannot fail.
    if let Ok(okm) = prk.expand(&[label], hkdf::HKDF_SHA256) {
        let _ = okm.fill(&mut out[..]);
    }
    out
}

impl SessionKeys {
    pub fn derive(spake_key: &[u8], transcript: [u8; 32]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &transcript).extract(spake_key);
        let confirm_primary = expand(&prk, LABEL_CONFIRM_PRIMARY);
        let confirm_secondary = expand(&prk, LABEL_CONFIRM_SECONDARY);
        SessionKeys {
            transcript,
            confirm_primary: hmac::Key::new(hmac::HMAC_SHA256, &confirm_primary[..]),
            confirm_secondary: hmac::Key::new(hmac::HMAC_SHA256, &confirm_secondary[..]),
            seal_to_secondary: expand(&prk, LABEL_SEAL_TO_SECONDARY),
            seal_to_primary: expand(&prk, LABEL_SEAL_TO_PRIMARY),
        }
    }

    fn key(&self, primary: bool) -> &hmac::Key {
        if primary {
            &self.confirm_primary
        } else {
            &self.confirm_secondary
        }
    }

    /// The confirmation the primary (`true`) or the secondary sends.
    pub fn confirmation(&self, primary: bool) -> [u8; CONFIRM_LEN] {
        let tag = hmac::sign(self.key(primary), &self.transcript);
        let mut out = [0u8; CONFIRM_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Checks the other side's confirmation in constant time.
    pub fn verify(&self, primary: bool, confirm: &[u8; CONFIRM_LEN]) -> bool {
        hmac::verify(self.key(primary), &self.transcript, confirm).is_ok()
    }

    fn aead_key(&self, to_secondary: bool) -> Option<aead::LessSafeKey> {
        let key = if to_secondary {
            &self.seal_to_secondary
        } else {
            &self.seal_to_primary
        };
        aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &key[..])
            .ok()
            .map(aead::LessSafeKey::new)
    }

    /// Seals the one message of a direction.
    pub fn seal(&self, to_secondary: bool, aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.aead_key(to_secondary)?;
        let mut buffer = plain.to_vec();
        let sealed = key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key([0u8; aead::NONCE_LEN]),
            aead::Aad::from(aad),
            &mut buffer,
        );
        sealed.ok().map(|()| buffer)
    }

    /// Opens the one message of a direction; `None` when it was not sealed under this
    /// session's key (tampered, truncated, or another session's).
    pub fn open(
        &self,
        to_secondary: bool,
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        let key = self.aead_key(to_secondary)?;
        let mut buffer = Zeroizing::new(sealed.to_vec());
        let plain_len = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key([0u8; aead::NONCE_LEN]),
                aead::Aad::from(aad),
                &mut buffer[..],
            )
            .ok()?
            .len();
        buffer.truncate(plain_len);
        Some(buffer)
    }
}
