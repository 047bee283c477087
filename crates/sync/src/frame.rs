//! Sealed frames: every payload after the handshake is `ChaCha20-Poly1305(bincode(message))`,
//! the ciphertext followed by its 16-byte tag.
//!
//! Each direction has its own key (derived by the handshake from the secret and both nonces) and
//! its own frame counter starting at 0. The 96-bit AEAD nonce is the counter (4 zero bytes, then
//! the counter big-endian), never sent: the receiver uses the count of frames it opened, so a
//! frame replayed, reordered or dropped fails like a forged one. The associated data is the
//! frame's header: its length (the 4 bytes before it on the stream), the session's protocol
//! version and the cluster id. So a frame can be neither read nor forged (no key), replayed or
//! reordered (wrong counter), reflected back to its sender (wrong direction key) nor carried
//! into another session (different nonces, different keys). Nothing is decoded before the tag
//! verifies. A direction whose counter would wrap refuses to seal or open: the session ends.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::reject::{RejectReason, Rejection};
use crate::wire;

/// The AEAD of sealed frames.
pub const AEAD: &aead::Algorithm = &aead::CHACHA20_POLY1305;
/// Length of the AEAD tag closing every sealed frame.
pub const TAG_LEN: usize = 16;

/// One direction's key and the associated data every frame of the session carries.
pub struct FrameKey {
    key: LessSafeKey,
    /// `length (4 bytes, set per frame) || version (2 bytes) || cluster id`.
    header: Vec<u8>,
}

impl FrameKey {
    pub(crate) fn new(key: UnboundKey, version: u16, cluster_id: &str) -> Self {
        let mut header = Vec::with_capacity(6 + cluster_id.len());
        header.extend_from_slice(&[0; 4]);
        header.extend_from_slice(&version.to_be_bytes());
        header.extend_from_slice(cluster_id.as_bytes());
        Self {
            key: LessSafeKey::new(key),
            header,
        }
    }

    /// Sets the length in the associated data to a frame of `len` bytes (ciphertext and tag);
    /// `None` when that does not fit the 4-byte length.
    fn set_len(&mut self, len: usize) -> Option<()> {
        let len = u32::try_from(len).ok()?;
        self.header[..4].copy_from_slice(&len.to_be_bytes());
        Some(())
    }
}

/// The nonce of frame `counter`; `None` once the counter is exhausted (never reused).
fn nonce(counter: u64) -> Option<Nonce> {
    if counter == u64::MAX {
        return None;
    }
    let mut bytes = [0u8; aead::NONCE_LEN];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Some(Nonce::assume_unique_for_key(bytes))
}

/// Seals outgoing messages of one direction.
pub struct Sealer {
    key: FrameKey,
    next_seq: u64,
}

/// Opens incoming messages of one direction.
pub struct Opener {
    key: FrameKey,
    expected_seq: u64,
    /// Decryption happens in place: one buffer reused for every frame.
    scratch: Vec<u8>,
}

impl Sealer {
    pub(crate) fn new(key: FrameKey) -> Self {
        Self { key, next_seq: 0 }
    }

    /// Encodes and encrypts `message` as the next frame of this direction.
    pub fn seal<T: Serialize>(&mut self, message: &T) -> Result<Vec<u8>, Rejection> {
        let mut buf = wire::encode(message)
            .map_err(|e| Rejection::new(RejectReason::Garbage, format!("cannot encode: {e}")))?;
        let exhausted = || {
            Rejection::new(
                RejectReason::FrameTooLarge,
                "frame counter or size exhausted: the session must end",
            )
        };
        let nonce = nonce(self.next_seq).ok_or_else(exhausted)?;
        self.key
            .set_len(buf.len() + TAG_LEN)
            .ok_or_else(exhausted)?;
        let aad = Aad::from(self.key.header.as_slice());
        let tag = self
            .key
            .key
            .seal_in_place_separate_tag(nonce, aad, &mut buf)
            .map_err(|_| exhausted())?;
        buf.extend_from_slice(tag.as_ref());
        self.next_seq += 1;
        Ok(buf)
    }

    /// Counter of the next sealed frame (= frames sealed so far).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

impl Opener {
    pub(crate) fn new(key: FrameKey) -> Self {
        Self {
            key,
            expected_seq: 0,
            scratch: Vec::new(),
        }
    }

    /// Verifies, decrypts and decodes the next frame of this direction. Any failure is final
    /// for the session: the frame is not applied and the caller closes the connection.
    pub fn open<T: DeserializeOwned>(&mut self, payload: &[u8]) -> Result<T, Rejection> {
        let bad = |detail: &str| Rejection::new(RejectReason::BadMac, detail);
        if payload.len() < TAG_LEN {
            return Err(bad("frame shorter than its tag"));
        }
        let nonce = nonce(self.expected_seq).ok_or_else(|| bad("frame counter exhausted"))?;
        self.key
            .set_len(payload.len())
            .ok_or_else(|| bad("frame too long"))?;
        let aad = Aad::from(self.key.header.as_slice());
        self.scratch.clear();
        self.scratch.extend_from_slice(payload);
        let plain = self
            .key
            .key
            .open_in_place(nonce, aad, &mut self.scratch)
            .map_err(|_| {
                bad("frame does not authenticate (forged, altered, replayed, reordered, dropped or from another session)")
            })?;
        self.expected_seq += 1;
        wire::decode(plain).map_err(|e| {
            Rejection::new(
                RejectReason::Garbage,
                format!("authenticated frame does not decode: {e}"),
            )
        })
    }

    /// Counter expected on the next frame (= frames opened so far).
    pub fn expected_seq(&self) -> u64 {
        self.expected_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(version: u16, cluster: &str) -> FrameKey {
        FrameKey::new(
            UnboundKey::new(AEAD, b"0123456789abcdef0123456789abcdef").unwrap(),
            version,
            cluster,
        )
    }

    fn pair() -> (Sealer, Opener) {
        (Sealer::new(key(2, "c")), Opener::new(key(2, "c")))
    }

    #[test]
    fn the_plaintext_is_not_in_the_frame() {
        let (mut sealer, mut opener) = pair();
        let message = "10.99.88.77 and a pushed cluster.toml".to_string();
        let frame = sealer.seal(&message).unwrap();
        assert!(!frame.windows(11).any(|w| w == b"10.99.88.77"));
        assert_eq!(opener.open::<String>(&frame).unwrap(), message);
    }

    #[test]
    fn another_version_or_cluster_id_does_not_open() {
        let mut sealer = Sealer::new(key(2, "c"));
        let frame = sealer.seal(&1u8).unwrap();
        assert!(Opener::new(key(3, "c")).open::<u8>(&frame).is_err());
        assert!(Opener::new(key(2, "d")).open::<u8>(&frame).is_err());
        assert_eq!(Opener::new(key(2, "c")).open::<u8>(&frame).unwrap(), 1);
    }

    #[test]
    fn an_exhausted_counter_ends_the_session() {
        let (mut sealer, mut opener) = pair();
        sealer.next_seq = u64::MAX - 1;
        opener.expected_seq = u64::MAX - 1;
        let frame = sealer.seal(&1u8).unwrap();
        assert_eq!(opener.open::<u8>(&frame).unwrap(), 1);
        assert!(sealer.seal(&2u8).is_err());
        assert!(opener.open::<u8>(&frame).is_err());
    }

    proptest! {
        /// Any change to a sealed frame (a flipped bit, a cut, extra bytes) is refused, and
        /// arbitrary input never panics.
        #[test]
        fn tampered_frames_never_open(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            flip in any::<usize>(),
            bit in 0u8..8,
            cut in any::<usize>(),
            junk in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let (mut sealer, _) = pair();
            let frame = sealer.seal(&payload).unwrap();
            let mut flipped = frame.clone();
            let i = flip % flipped.len();
            flipped[i] ^= 1 << bit;
            prop_assert!(pair().1.open::<Vec<u8>>(&flipped).is_err());
            let cut = cut % frame.len();
            prop_assert!(pair().1.open::<Vec<u8>>(&frame[..cut]).is_err());
            let mut longer = frame.clone();
            longer.push(0);
            prop_assert!(pair().1.open::<Vec<u8>>(&longer).is_err());
            let _ = pair().1.open::<Vec<u8>>(&junk);
            prop_assert_eq!(pair().1.open::<Vec<u8>>(&frame).unwrap(), payload);
        }
    }
}
