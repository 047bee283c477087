//! Framing and encoding shared by every message on the sync session.
//!
//! A frame on the TCP stream is a 4-byte big-endian length followed by that many payload bytes
//! (tokio-util `LengthDelimitedCodec`, built by `length_codec` with the `driver` feature: the
//! core only ever sees whole payloads, so it needs no codec). A payload is a bincode 2 (serde,
//! `standard()` config) value: a [`crate::handshake::Handshake`] message before the session is
//! authenticated, a sealed (encrypted) [`crate::frame`] afterwards.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Newest version of the sync protocol spoken by this build. 3: the config push carries the files
/// `cluster.toml` names (`ConfigMsg::OfferWithFiles`, the TLS certificates); 2: the dialer proves first
/// and frames are encrypted (ChaCha20-Poly1305); 1 had the acceptor prove first and frames in clear.
/// Feature `wire-next` builds the next release (4, same frames), for the rolling-upgrade tests and
/// drill. A session speaks the highest version both sides offer (`handshake`); a version-2 peer is still
/// accepted and gets `cluster.toml` alone while it names no file.
pub const PROTOCOL_VERSION: u16 = if cfg!(feature = "wire-next") { 4 } else { 3 };
/// Oldest protocol version this build still accepts from a peer (version 1 is refused
/// explicitly: its acceptor-first handshake and clear frames are what version 2 replaces).
pub const MIN_PROTOCOL_VERSION: u16 = 2;
/// Default port of the sync session (as on the appliance).
pub const DEFAULT_SYNC_PORT: u16 = 7778;
/// Default upper bound of one frame's payload.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Errors of encoding or decoding one payload.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode: {0}")]
    Encode(String),
    #[error("decode: {0}")]
    Decode(String),
    #[error("decode: {0} trailing bytes after the message")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Appends the encoding of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let bytes = encode(value)?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Decodes exactly one value from `bytes`; trailing bytes are an error. Allocation claims are
/// bounded by the length of `bytes` (bincode checks sizes against the remaining input), so a
/// hostile length prefix cannot make us allocate more than one frame.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let limited = config().with_limit::<{ DEFAULT_MAX_FRAME * 4 }>();
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, limited)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// The length-delimited codec used on the socket, refusing frames longer than `max_frame`.
#[cfg(feature = "driver")]
pub fn length_codec(max_frame: usize) -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max_frame)
        .new_codec()
}
