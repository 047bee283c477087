//! Sealed frames: every payload after the handshake is `bincode((seq, message)) || HMAC-SHA256 tag`.
//!
//! Each direction has its own key (derived by the handshake from the secret and both nonces) and
//! its own sequence counter starting at 0. The tag covers the sequence number, so a frame can be
//! neither forged (no key), replayed or reordered (wrong sequence), reflected back to its sender
//! (wrong direction key) nor carried into another session (different nonces, different keys).
//! The tag is checked before anything is decoded.

use ring::hmac;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::reject::{RejectReason, Rejection};
use crate::wire;

/// Length of the HMAC-SHA256 tag closing every sealed frame.
pub const TAG_LEN: usize = 32;

/// Seals outgoing messages of one direction.
pub struct Sealer {
    key: hmac::Key,
    next_seq: u64,
}

/// Opens incoming messages of one direction.
pub struct Opener {
    key: hmac::Key,
    expected_seq: u64,
}

impl Sealer {
    pub(crate) fn new(key: hmac::Key) -> Self {
        Self { key, next_seq: 0 }
    }

    /// Encodes and authenticates `message` as the next frame of this direction.
    pub fn seal<T: Serialize>(&mut self, message: &T) -> Result<Vec<u8>, wire::CodecError> {
        let mut buf = wire::encode(&(self.next_seq, message))?;
        let tag = hmac::sign(&self.key, &buf);
        buf.extend_from_slice(tag.as_ref());
        self.next_seq += 1;
        Ok(buf)
    }

    /// Sequence number the next sealed frame will carry (= frames sealed so far).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

impl Opener {
    pub(crate) fn new(key: hmac::Key) -> Self {
        Self {
            key,
            expected_seq: 0,
        }
    }

    /// Verifies and decodes the next frame of this direction. Any failure is final for the
    /// session: the frame is not applied and the caller closes the connection.
    pub fn open<T: DeserializeOwned>(&mut self, payload: &[u8]) -> Result<T, Rejection> {
        if payload.len() < TAG_LEN {
            return Err(Rejection::new(
                RejectReason::BadMac,
                "frame shorter than its tag",
            ));
        }
        let (body, tag) = payload.split_at(payload.len() - TAG_LEN);
        hmac::verify(&self.key, body, tag)
            .map_err(|_| Rejection::new(RejectReason::BadMac, "frame tag does not verify"))?;
        let (seq, message): (u64, T) = wire::decode(body).map_err(|e| {
            Rejection::new(
                RejectReason::Garbage,
                format!("authenticated frame does not decode: {e}"),
            )
        })?;
        if seq != self.expected_seq {
            return Err(Rejection::new(
                RejectReason::BadSequence,
                format!("sequence {seq}, expected {}", self.expected_seq),
            ));
        }
        self.expected_seq += 1;
        Ok(message)
    }

    /// Sequence number expected on the next frame (= frames opened so far).
    pub fn expected_seq(&self) -> u64 {
        self.expected_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair() -> (Sealer, Opener) {
        let key = || hmac::Key::new(hmac::HMAC_SHA256, b"test key of some length");
        (Sealer::new(key()), Opener::new(key()))
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
