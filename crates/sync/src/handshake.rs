//! Session opening, sans-IO: the dialer proves knowledge of the shared secret first, then the
//! acceptor; the session's keys come from HKDF over the secret, an ephemeral X25519 exchange
//! and both nonces.
//!
//! ```text
//! dialer -> acceptor  Hello     { magic, version, min_version, cluster_id, nonce_d }
//! acceptor -> dialer  Challenge { version, min_version, cluster_id, nonce_a, share_a }
//!                     (or Refuse { reason } on a version or cluster mismatch)
//! dialer -> acceptor  Proof     { share_d, proof_d }
//! acceptor -> dialer  Confirm   { proof_a }
//!                     (or Refuse { reason } when proof_d does not verify)
//! ```
//! Both nonces are 32 fresh bytes from `ring::rand::SystemRandom`; the shares are ephemeral
//! X25519 public keys. Keys come from HKDF-SHA256 with salt `nonce_d || nonce_a` and
//! `secret || X25519(share_d, share_a)` as input keying material; the `info` labels separate four
//! keys: the dialer's proof key, the acceptor's proof key and one AEAD key per direction. A proof
//! is HMAC-SHA256 over the transcript (cluster id, both version ranges, both nonces, both
//! shares) under its role's proof key, so a proof cannot be reflected to the other role, and a
//! recorded session replayed to a node fails because that node's nonce and share differ.
//!
//! The exchange means nothing on the wire is computed from the secret alone and public values:
//! a passive observer cannot test secret guesses against a proof or a frame, and a secret
//! leaked later does not open recorded sessions.
//!
//! Why the dialer proves first: a proof is a value an attacker can test secret guesses against
//! offline. The acceptor answers anyone from the peer's address (any local user on the peer
//! host), so it reveals nothing (a nonce) until the dialer has proven itself; the dialer only
//! talks to the configured peer address (one who intercepts that connection does get a proof to
//! test guesses against: inherent to a challenge-response on a shared secret; a `tandem keygen`
//! secret makes it useless). Protocol version 1 (acceptor first, no exchange) is refused.

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::SecureRandom;
use ring::{aead, hkdf, hmac};
use serde::{Deserialize, Serialize};

use crate::frame::{FrameKey, Opener, Sealer};
use crate::reject::{RejectReason, Rejection};
use crate::wire::{self, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use tandem_types::Secret;

/// First bytes of every session: a peer speaking something else is rejected at once.
pub const MAGIC: [u8; 8] = *b"TNDMSYNC";
/// Length of each side's nonce.
pub const NONCE_LEN: usize = 32;

type Nonce = [u8; NONCE_LEN];
type Proof = [u8; 32];
/// An ephemeral X25519 public key.
type Share = [u8; 32];

/// What a node proves and checks when a session opens.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `[cluster] name` of `cluster.toml`: both nodes must agree.
    pub cluster_id: String,
    pub secret: Secret,
    /// This build's accepted protocol range (overridable in tests of version refusal).
    pub version: u16,
    pub min_version: u16,
}

impl Identity {
    pub fn new(cluster_id: impl Into<String>, secret: Secret) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            secret,
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
        }
    }
}

/// Messages exchanged before the session is authenticated. The variant order is part of the
/// wire format: `Hello` and `Refuse` keep their version-1 places so that a version-1 peer and
/// this build still understand each other's hello and refusal (and so refuse explicitly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handshake {
    Hello {
        magic: [u8; 8],
        version: u16,
        min_version: u16,
        cluster_id: String,
        nonce: Nonce,
    },
    Challenge {
        version: u16,
        min_version: u16,
        cluster_id: String,
        nonce: Nonce,
        share: Share,
    },
    /// The dialer's share and proof.
    Proof {
        share: Share,
        proof: Proof,
    },
    Refuse {
        reason: String,
    },
    /// The acceptor's proof, sent only after the dialer's verified.
    Confirm {
        proof: Proof,
    },
}

/// Keys and counters of an authenticated session.
pub struct SessionKeys {
    /// Protocol version both sides speak on this session: the highest both offered.
    pub version: u16,
    /// The newest version each side offered (ours, the peer's): a peer offering a newer one runs a newer release
    /// (the primary holds its config push: `ConfigPush::set_peer_protocol`).
    pub offered: (u16, u16),
    pub sealer: Sealer,
    pub opener: Opener,
}

/// A failed handshake: the reason, and a frame to send the peer before closing (an explicit
/// refusal on version or cluster mismatch or a bad proof, so the operator of the other node
/// sees why).
#[derive(Debug)]
pub struct HandshakeFailure {
    pub rejection: Rejection,
    pub reply: Option<Vec<u8>>,
}

impl From<Rejection> for HandshakeFailure {
    fn from(rejection: Rejection) -> Self {
        Self {
            rejection,
            reply: None,
        }
    }
}

/// A failure with an explicit `Refuse` for the peer.
fn refuse(rejection: Rejection) -> HandshakeFailure {
    let reply = encode_handshake(&Handshake::Refuse {
        reason: rejection.to_string(),
    })
    .ok();
    HandshakeFailure { rejection, reply }
}

fn fresh_nonce(rng: &dyn SecureRandom) -> Result<Nonce, Rejection> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .map_err(|_| Rejection::new(RejectReason::Io, "system random source failed"))?;
    Ok(nonce)
}

fn encode_handshake(message: &Handshake) -> Result<Vec<u8>, Rejection> {
    wire::encode(message).map_err(|e| Rejection::new(RejectReason::Garbage, e.to_string()))
}

fn decode_handshake(payload: &[u8]) -> Result<Handshake, Rejection> {
    wire::decode(payload).map_err(|e| {
        Rejection::new(
            RejectReason::Garbage,
            format!("not a handshake message: {e}"),
        )
    })
}

/// A fresh ephemeral X25519 key and its public share.
fn ephemeral(rng: &dyn SecureRandom) -> Result<(EphemeralPrivateKey, Share), Rejection> {
    let failed = |_| Rejection::new(RejectReason::Io, "system random source failed");
    let private = EphemeralPrivateKey::generate(&X25519, rng).map_err(failed)?;
    let public = private.compute_public_key().map_err(failed)?;
    let mut share = [0u8; 32];
    if public.as_ref().len() != share.len() {
        return Err(Rejection::new(
            RejectReason::Io,
            "unexpected X25519 key length",
        ));
    }
    share.copy_from_slice(public.as_ref());
    Ok((private, share))
}

/// The shared secret of the exchange; a peer share of small order (an all-zero result) fails.
fn agree(private: EphemeralPrivateKey, peer_share: &Share) -> Result<[u8; 32], Rejection> {
    agreement::agree_ephemeral(
        private,
        &UnparsedPublicKey::new(&X25519, peer_share),
        |dh| {
            let mut out = [0u8; 32];
            if dh.len() == out.len() {
                out.copy_from_slice(dh);
            }
            out
        },
    )
    .map_err(|_| Rejection::new(RejectReason::BadProof, "the peer's key share is invalid"))
}

/// Version both sides speak, or `None` when the ranges do not overlap.
fn negotiate(ours: (u16, u16), theirs: (u16, u16)) -> Option<u16> {
    let (our_max, our_min) = ours;
    let (their_max, their_min) = theirs;
    let version = our_max.min(their_max);
    (version >= our_min && version >= their_min).then_some(version)
}

struct Transcript {
    cluster_id: String,
    dialer: (u16, u16),
    acceptor: (u16, u16),
    nonce_d: Nonce,
    nonce_a: Nonce,
    share_d: Share,
    share_a: Share,
}

struct Keys {
    dialer_proof: hmac::Key,
    acceptor_proof: hmac::Key,
    dialer_to_acceptor: aead::UnboundKey,
    acceptor_to_dialer: aead::UnboundKey,
}

impl Transcript {
    fn bytes(&self) -> Result<Vec<u8>, Rejection> {
        wire::encode(&(
            "tandem-sync v2 handshake",
            &self.cluster_id,
            self.dialer,
            self.acceptor,
            &self.nonce_d,
            &self.nonce_a,
            &self.share_d,
            &self.share_a,
        ))
        .map_err(|e| Rejection::new(RejectReason::Garbage, e.to_string()))
    }

    fn keys(&self, secret: &Secret, dh: &[u8; 32]) -> Result<Keys, Rejection> {
        let mut salt_bytes = [0u8; 2 * NONCE_LEN];
        salt_bytes[..NONCE_LEN].copy_from_slice(&self.nonce_d);
        salt_bytes[NONCE_LEN..].copy_from_slice(&self.nonce_a);
        let mut ikm = Vec::with_capacity(secret.expose().len() + dh.len());
        ikm.extend_from_slice(secret.expose());
        ikm.extend_from_slice(dh);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt_bytes).extract(&ikm);
        // The copy of the secret does not outlive its use (black_box keeps the wipe).
        ikm.fill(0);
        std::hint::black_box(&ikm);
        let info = |label: &'static [u8]| {
            [
                b"tandem-sync v2 ".as_slice(),
                label,
                b" ",
                self.cluster_id.as_bytes(),
            ]
        };
        // expand only fails when asking for more than 255 hash blocks; 32 bytes cannot.
        let failed = |_| Rejection::new(RejectReason::Io, "HKDF expand failed");
        let proof_key = |label: &'static [u8]| -> Result<hmac::Key, Rejection> {
            Ok(hmac::Key::from(
                prk.expand(&info(label), hmac::HMAC_SHA256)
                    .map_err(failed)?,
            ))
        };
        let frame_key = |label: &'static [u8]| -> Result<aead::UnboundKey, Rejection> {
            Ok(aead::UnboundKey::from(
                prk.expand(&info(label), crate::frame::AEAD)
                    .map_err(failed)?,
            ))
        };
        Ok(Keys {
            dialer_proof: proof_key(b"dialer proof")?,
            acceptor_proof: proof_key(b"acceptor proof")?,
            dialer_to_acceptor: frame_key(b"aead dialer->acceptor")?,
            acceptor_to_dialer: frame_key(b"aead acceptor->dialer")?,
        })
    }
}

fn sign(key: &hmac::Key, data: &[u8]) -> Proof {
    let mut proof = [0u8; 32];
    proof.copy_from_slice(hmac::sign(key, data).as_ref());
    proof
}

/// The dialing side after it sent its `Hello`.
pub struct DialerHandshake {
    identity: Identity,
    nonce: Nonce,
    private: EphemeralPrivateKey,
    share: Share,
}

/// The dialing side after it sent its `Proof`: waits for the acceptor's `Confirm`.
pub struct DialerAwaitingConfirm {
    version: u16,
    offered: (u16, u16),
    transcript_bytes: Vec<u8>,
    acceptor_proof: hmac::Key,
    sealer: Sealer,
    opener: Opener,
}

impl DialerHandshake {
    /// Starts a session: returns the state and the `Hello` payload to send.
    pub fn start(
        identity: &Identity,
        rng: &dyn SecureRandom,
    ) -> Result<(Self, Vec<u8>), Rejection> {
        let nonce = fresh_nonce(rng)?;
        let (private, share) = ephemeral(rng)?;
        let hello = Handshake::Hello {
            magic: MAGIC,
            version: identity.version,
            min_version: identity.min_version,
            cluster_id: identity.cluster_id.clone(),
            nonce,
        };
        Ok((
            Self {
                identity: identity.clone(),
                nonce,
                private,
                share,
            },
            encode_handshake(&hello)?,
        ))
    }

    /// Checks the acceptor's `Challenge`; returns the `Proof` payload to send and the state
    /// waiting for the acceptor's `Confirm`.
    pub fn on_challenge(
        self,
        payload: &[u8],
    ) -> Result<(Vec<u8>, DialerAwaitingConfirm), Rejection> {
        let (version, min_version, cluster_id, nonce_a, share_a) = match decode_handshake(payload)?
        {
            Handshake::Challenge {
                version,
                min_version,
                cluster_id,
                nonce,
                share,
            } => (version, min_version, cluster_id, nonce, share),
            Handshake::Refuse { reason } => {
                return Err(Rejection::new(RejectReason::RefusedByPeer, reason));
            }
            other => {
                return Err(Rejection::new(
                    RejectReason::UnexpectedMessage,
                    format!("expected a challenge, got {}", kind(&other)),
                ));
            }
        };
        let id = &self.identity;
        if cluster_id != id.cluster_id {
            return Err(Rejection::new(
                RejectReason::ClusterMismatch,
                format!(
                    "peer is in cluster {cluster_id:?}, we are in {:?}",
                    id.cluster_id
                ),
            ));
        }
        let Some(session_version) = negotiate((id.version, id.min_version), (version, min_version))
        else {
            return Err(version_rejection(
                (id.version, id.min_version),
                (version, min_version),
            ));
        };
        let transcript = Transcript {
            cluster_id,
            dialer: (id.version, id.min_version),
            acceptor: (version, min_version),
            nonce_d: self.nonce,
            nonce_a,
            share_d: self.share,
            share_a,
        };
        let dh = agree(self.private, &share_a)?;
        let bytes = transcript.bytes()?;
        let keys = transcript.keys(&id.secret, &dh)?;
        let reply = encode_handshake(&Handshake::Proof {
            share: self.share,
            proof: sign(&keys.dialer_proof, &bytes),
        })?;
        let cluster = &transcript.cluster_id;
        Ok((
            reply,
            DialerAwaitingConfirm {
                version: session_version,
                offered: (id.version, version),
                transcript_bytes: bytes,
                acceptor_proof: keys.acceptor_proof,
                sealer: Sealer::new(FrameKey::new(
                    keys.dialer_to_acceptor,
                    session_version,
                    cluster,
                )),
                opener: Opener::new(FrameKey::new(
                    keys.acceptor_to_dialer,
                    session_version,
                    cluster,
                )),
            },
        ))
    }
}

impl DialerAwaitingConfirm {
    /// Checks the acceptor's `Confirm`; returns the session keys.
    pub fn on_confirm(self, payload: &[u8]) -> Result<SessionKeys, Rejection> {
        let proof = match decode_handshake(payload)? {
            Handshake::Confirm { proof } => proof,
            // The acceptor refuses at this step only when our proof did not verify.
            Handshake::Refuse { reason } => {
                return Err(Rejection::new(
                    RejectReason::BadProof,
                    format!(
                        "the acceptor refused our proof: {}",
                        reason.strip_prefix("bad_proof: ").unwrap_or(&reason)
                    ),
                ));
            }
            other => {
                return Err(Rejection::new(
                    RejectReason::UnexpectedMessage,
                    format!("expected a confirm, got {}", kind(&other)),
                ));
            }
        };
        hmac::verify(&self.acceptor_proof, &self.transcript_bytes, &proof).map_err(|_| {
            Rejection::new(
                RejectReason::BadProof,
                "the acceptor's proof does not verify (a wrong secret, or not our peer)",
            )
        })?;
        Ok(SessionKeys {
            version: self.version,
            offered: self.offered,
            sealer: self.sealer,
            opener: self.opener,
        })
    }
}

/// The accepting side after it answered a `Hello` with its `Challenge`.
pub struct AcceptorHandshake {
    version: u16,
    offered: (u16, u16),
    secret: Secret,
    /// The transcript but the dialer's share, which comes with its proof.
    transcript: Transcript,
    private: EphemeralPrivateKey,
}

impl AcceptorHandshake {
    /// Checks the dialer's `Hello`; returns the state and the `Challenge` payload to send. The
    /// challenge carries only our nonce, key share and version range: nothing derived from the
    /// secret.
    pub fn on_hello(
        identity: &Identity,
        rng: &dyn SecureRandom,
        payload: &[u8],
    ) -> Result<(Self, Vec<u8>), HandshakeFailure> {
        let (magic, version, min_version, cluster_id, nonce_d) = match decode_handshake(payload)? {
            Handshake::Hello {
                magic,
                version,
                min_version,
                cluster_id,
                nonce,
            } => (magic, version, min_version, cluster_id, nonce),
            other => {
                return Err(Rejection::new(
                    RejectReason::UnexpectedMessage,
                    format!("expected a hello, got {}", kind(&other)),
                )
                .into());
            }
        };
        if magic != MAGIC {
            return Err(Rejection::new(RejectReason::Garbage, "bad magic").into());
        }
        if cluster_id != identity.cluster_id {
            return Err(refuse(Rejection::new(
                RejectReason::ClusterMismatch,
                format!(
                    "peer is in cluster {cluster_id:?}, we are in {:?}",
                    identity.cluster_id
                ),
            )));
        }
        let ours = (identity.version, identity.min_version);
        let Some(session_version) = negotiate(ours, (version, min_version)) else {
            return Err(refuse(version_rejection(ours, (version, min_version))));
        };
        let nonce_a = fresh_nonce(rng)?;
        let (private, share_a) = ephemeral(rng)?;
        let challenge = Handshake::Challenge {
            version: identity.version,
            min_version: identity.min_version,
            cluster_id: identity.cluster_id.clone(),
            nonce: nonce_a,
            share: share_a,
        };
        let payload = encode_handshake(&challenge)?;
        Ok((
            Self {
                version: session_version,
                offered: (identity.version, version),
                secret: identity.secret.clone(),
                transcript: Transcript {
                    cluster_id,
                    dialer: (version, min_version),
                    acceptor: ours,
                    nonce_d,
                    nonce_a,
                    share_d: [0; 32],
                    share_a,
                },
                private,
            },
            payload,
        ))
    }

    /// Checks the dialer's `Proof`; returns the `Confirm` payload to send and the session keys.
    /// A proof that does not verify is answered with a `Refuse` (it tells the dialer nothing it
    /// could not tell from the connection closing).
    pub fn on_proof(self, payload: &[u8]) -> Result<(Vec<u8>, SessionKeys), HandshakeFailure> {
        let (share_d, proof) = match decode_handshake(payload)? {
            Handshake::Proof { share, proof } => (share, proof),
            other => {
                return Err(Rejection::new(
                    RejectReason::UnexpectedMessage,
                    format!("expected a proof, got {}", kind(&other)),
                )
                .into());
            }
        };
        let mut transcript = self.transcript;
        transcript.share_d = share_d;
        let dh = agree(self.private, &share_d)?;
        let bytes = transcript.bytes()?;
        let keys = transcript.keys(&self.secret, &dh)?;
        if hmac::verify(&keys.dialer_proof, &bytes, &proof).is_err() {
            return Err(refuse(Rejection::new(
                RejectReason::BadProof,
                "the dialer's proof does not verify (a wrong secret, or a replayed session)",
            )));
        }
        let reply = encode_handshake(&Handshake::Confirm {
            proof: sign(&keys.acceptor_proof, &bytes),
        })?;
        let (version, cluster) = (self.version, &transcript.cluster_id);
        Ok((
            reply,
            SessionKeys {
                version,
                offered: self.offered,
                sealer: Sealer::new(FrameKey::new(keys.acceptor_to_dialer, version, cluster)),
                opener: Opener::new(FrameKey::new(keys.dialer_to_acceptor, version, cluster)),
            },
        ))
    }
}

fn version_rejection(ours: (u16, u16), theirs: (u16, u16)) -> Rejection {
    let hint = if theirs.0 < ours.1 {
        " (the peer runs an older tandem: upgrade it; a mixed pair does not sync)"
    } else if theirs.1 > ours.0 {
        " (this node runs an older tandem: upgrade it; a mixed pair does not sync)"
    } else {
        ""
    };
    Rejection::new(
        RejectReason::VersionUnsupported,
        format!(
            "peer speaks protocol versions {}..={}, we speak {}..={}{hint}",
            theirs.1, theirs.0, ours.1, ours.0
        ),
    )
}

fn kind(message: &Handshake) -> &'static str {
    match message {
        Handshake::Hello { .. } => "hello",
        Handshake::Challenge { .. } => "challenge",
        Handshake::Proof { .. } => "proof",
        Handshake::Refuse { .. } => "refuse",
        Handshake::Confirm { .. } => "confirm",
    }
}

#[cfg(test)]
mod tests;
