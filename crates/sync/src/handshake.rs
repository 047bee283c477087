//! Session opening, sans-IO: a mutual challenge-response on the shared secret.
//!
//! ```text
//! dialer -> acceptor  Hello     { magic, version, min_version, cluster_id, nonce_d }
//! acceptor -> dialer  Challenge { version, min_version, cluster_id, nonce_a, proof_a }
//!                     (or Refuse { reason } on a version or cluster mismatch)
//! dialer -> acceptor  Proof     { proof_d }
//! ```
//! Both nonces are 32 fresh bytes from `ring::rand::SystemRandom`. Keys come from HKDF-SHA256
//! with salt `nonce_d || nonce_a` and the secret as input keying material; the `info` labels
//! separate four keys: the acceptor's proof key, the dialer's proof key and one frame-MAC key per
//! direction. A proof is HMAC-SHA256 over the transcript (cluster id, both version ranges, both
//! nonces) under its role's proof key, so a proof cannot be reflected to the other role, and a
//! recorded session replayed to a node fails because that node's nonce differs.

use ring::rand::SecureRandom;
use ring::{hkdf, hmac};
use serde::{Deserialize, Serialize};

use crate::frame::{Opener, Sealer};
use crate::reject::{RejectReason, Rejection};
use crate::wire::{self, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use tandem_types::Secret;

/// First bytes of every session: a peer speaking something else is rejected at once.
pub const MAGIC: [u8; 8] = *b"TNDMSYNC";
/// Length of each side's nonce.
pub const NONCE_LEN: usize = 32;

type Nonce = [u8; NONCE_LEN];
type Proof = [u8; 32];

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

/// Messages exchanged before the session is authenticated.
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
        proof: Proof,
    },
    Proof {
        proof: Proof,
    },
    Refuse {
        reason: String,
    },
}

/// Keys and counters of an authenticated session.
pub struct SessionKeys {
    /// Protocol version both sides speak on this session.
    pub version: u16,
    pub sealer: Sealer,
    pub opener: Opener,
}

/// A failed handshake: the reason, and a frame to send the peer before closing (an explicit
/// refusal on version or cluster mismatch so the operator of the other node sees why).
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
}

struct Keys {
    acceptor_proof: hmac::Key,
    dialer_proof: hmac::Key,
    dialer_to_acceptor: hmac::Key,
    acceptor_to_dialer: hmac::Key,
}

impl Transcript {
    fn bytes(&self) -> Result<Vec<u8>, Rejection> {
        wire::encode(&(
            "tandem-sync handshake",
            &self.cluster_id,
            self.dialer,
            self.acceptor,
            &self.nonce_d,
            &self.nonce_a,
        ))
        .map_err(|e| Rejection::new(RejectReason::Garbage, e.to_string()))
    }

    fn keys(&self, secret: &Secret) -> Keys {
        let mut salt_bytes = [0u8; 2 * NONCE_LEN];
        salt_bytes[..NONCE_LEN].copy_from_slice(&self.nonce_d);
        salt_bytes[NONCE_LEN..].copy_from_slice(&self.nonce_a);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt_bytes).extract(secret.expose());
        let key = |label: &[u8]| -> hmac::Key {
            let info = [
                b"tandem-sync v1 ".as_slice(),
                label,
                b" ",
                self.cluster_id.as_bytes(),
            ];
            match prk.expand(&info, hmac::HMAC_SHA256) {
                Ok(okm) => hmac::Key::from(okm),
                // expand only fails when asking for more than 255 blocks; 32 bytes cannot.
                Err(_) => hmac::Key::new(hmac::HMAC_SHA256, label),
            }
        };
        Keys {
            acceptor_proof: key(b"acceptor proof"),
            dialer_proof: key(b"dialer proof"),
            dialer_to_acceptor: key(b"mac dialer->acceptor"),
            acceptor_to_dialer: key(b"mac acceptor->dialer"),
        }
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
}

impl DialerHandshake {
    /// Starts a session: returns the state and the `Hello` payload to send.
    pub fn start(
        identity: &Identity,
        rng: &dyn SecureRandom,
    ) -> Result<(Self, Vec<u8>), Rejection> {
        let nonce = fresh_nonce(rng)?;
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
            },
            encode_handshake(&hello)?,
        ))
    }

    /// Checks the acceptor's `Challenge`; returns the `Proof` payload to send and the session keys.
    pub fn on_challenge(self, payload: &[u8]) -> Result<(Vec<u8>, SessionKeys), Rejection> {
        let (version, min_version, cluster_id, nonce_a, proof) = match decode_handshake(payload)? {
            Handshake::Challenge {
                version,
                min_version,
                cluster_id,
                nonce,
                proof,
            } => (version, min_version, cluster_id, nonce, proof),
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
        };
        let bytes = transcript.bytes()?;
        let keys = transcript.keys(&id.secret);
        hmac::verify(&keys.acceptor_proof, &bytes, &proof).map_err(|_| {
            Rejection::new(
                RejectReason::BadProof,
                "the acceptor's proof does not verify (wrong secret?)",
            )
        })?;
        let reply = encode_handshake(&Handshake::Proof {
            proof: sign(&keys.dialer_proof, &bytes),
        })?;
        Ok((
            reply,
            SessionKeys {
                version: session_version,
                sealer: Sealer::new(keys.dialer_to_acceptor),
                opener: Opener::new(keys.acceptor_to_dialer),
            },
        ))
    }
}

/// The accepting side after it answered a `Hello` with its `Challenge`.
pub struct AcceptorHandshake {
    version: u16,
    transcript_bytes: Vec<u8>,
    keys: Keys,
}

impl AcceptorHandshake {
    /// Checks the dialer's `Hello`; returns the state and the `Challenge` payload to send.
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
        let refuse = |rejection: Rejection| -> HandshakeFailure {
            let reply = encode_handshake(&Handshake::Refuse {
                reason: rejection.to_string(),
            })
            .ok();
            HandshakeFailure { rejection, reply }
        };
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
        let transcript = Transcript {
            cluster_id,
            dialer: (version, min_version),
            acceptor: ours,
            nonce_d,
            nonce_a,
        };
        let transcript_bytes = transcript.bytes()?;
        let keys = transcript.keys(&identity.secret);
        let challenge = Handshake::Challenge {
            version: identity.version,
            min_version: identity.min_version,
            cluster_id: identity.cluster_id.clone(),
            nonce: nonce_a,
            proof: sign(&keys.acceptor_proof, &transcript_bytes),
        };
        let payload = encode_handshake(&challenge)?;
        Ok((
            Self {
                version: session_version,
                transcript_bytes,
                keys,
            },
            payload,
        ))
    }

    /// Checks the dialer's `Proof`; returns the session keys.
    pub fn on_proof(self, payload: &[u8]) -> Result<SessionKeys, Rejection> {
        let proof = match decode_handshake(payload)? {
            Handshake::Proof { proof } => proof,
            other => {
                return Err(Rejection::new(
                    RejectReason::UnexpectedMessage,
                    format!("expected a proof, got {}", kind(&other)),
                ));
            }
        };
        hmac::verify(&self.keys.dialer_proof, &self.transcript_bytes, &proof).map_err(|_| {
            Rejection::new(
                RejectReason::BadProof,
                "the dialer's proof does not verify (wrong secret or replayed session)",
            )
        })?;
        Ok(SessionKeys {
            version: self.version,
            sealer: Sealer::new(self.keys.acceptor_to_dialer),
            opener: Opener::new(self.keys.dialer_to_acceptor),
        })
    }
}

fn version_rejection(ours: (u16, u16), theirs: (u16, u16)) -> Rejection {
    Rejection::new(
        RejectReason::VersionUnsupported,
        format!(
            "peer speaks protocol versions {}..={}, we speak {}..={}",
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn identity(secret: &[u8]) -> Identity {
        Identity::new("openstack", Secret::new(secret.to_vec()).unwrap())
    }

    const SECRET: &[u8] = b"correct horse battery staple, twice";

    fn open_session(
        dialer: &Identity,
        acceptor: &Identity,
    ) -> Result<(SessionKeys, SessionKeys), Rejection> {
        let rng = SystemRandom::new();
        let (d, hello) = DialerHandshake::start(dialer, &rng)?;
        let (a, challenge) =
            AcceptorHandshake::on_hello(acceptor, &rng, &hello).map_err(|f| f.rejection)?;
        let (proof, dk) = d.on_challenge(&challenge)?;
        let ak = a.on_proof(&proof)?;
        Ok((dk, ak))
    }

    #[test]
    fn matching_secrets_open_a_session_and_frames_flow_both_ways() {
        let (mut d, mut a) = open_session(&identity(SECRET), &identity(SECRET)).unwrap();
        assert_eq!(d.version, PROTOCOL_VERSION);
        let f = d.sealer.seal(&"to acceptor".to_string()).unwrap();
        assert_eq!(a.opener.open::<String>(&f).unwrap(), "to acceptor");
        let g = a.sealer.seal(&"to dialer".to_string()).unwrap();
        assert_eq!(d.opener.open::<String>(&g).unwrap(), "to dialer");
    }

    #[test]
    fn wrong_secret_fails_on_both_sides() {
        let err = open_session(
            &identity(b"another secret, of enough length too"),
            &identity(SECRET),
        )
        .err()
        .unwrap();
        assert_eq!(err.reason, RejectReason::BadProof);
        // The acceptor also refuses a dialer that forges a proof.
        let rng = SystemRandom::new();
        let (_d, hello) = DialerHandshake::start(&identity(SECRET), &rng).unwrap();
        let (a, _) = AcceptorHandshake::on_hello(&identity(SECRET), &rng, &hello).unwrap();
        let forged = encode_handshake(&Handshake::Proof { proof: [7; 32] }).unwrap();
        assert_eq!(
            a.on_proof(&forged).err().unwrap().reason,
            RejectReason::BadProof
        );
    }

    #[test]
    fn cluster_and_version_mismatch_are_refused_explicitly() {
        let rng = SystemRandom::new();
        let mut other = identity(SECRET);
        other.cluster_id = "elsewhere".into();
        let (d, hello) = DialerHandshake::start(&other, &rng).unwrap();
        let failure = AcceptorHandshake::on_hello(&identity(SECRET), &rng, &hello)
            .err()
            .unwrap();
        assert_eq!(failure.rejection.reason, RejectReason::ClusterMismatch);
        let refused = d.on_challenge(&failure.reply.unwrap()).err().unwrap();
        assert_eq!(refused.reason, RejectReason::RefusedByPeer);
        assert!(refused.detail.contains("cluster"));

        let mut future = identity(SECRET);
        future.version = 9;
        future.min_version = 5;
        let (_d, hello) = DialerHandshake::start(&future, &rng).unwrap();
        let failure = AcceptorHandshake::on_hello(&identity(SECRET), &rng, &hello)
            .err()
            .unwrap();
        assert_eq!(failure.rejection.reason, RejectReason::VersionUnsupported);
        // An older peer inside our range is accepted at its version.
        let mut newer = identity(SECRET);
        newer.version = 2;
        let (d, _) = open_session(&newer, &identity(SECRET)).unwrap();
        assert_eq!(d.version, 1);
    }

    #[test]
    fn replayed_dialer_messages_fail_against_a_fresh_acceptor() {
        let rng = SystemRandom::new();
        let id = identity(SECRET);
        let (d, hello) = DialerHandshake::start(&id, &rng).unwrap();
        let (a, challenge) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
        let (proof, mut dk) = d.on_challenge(&challenge).unwrap();
        let _ak = a.on_proof(&proof).unwrap();
        let frame = dk.sealer.seal(&1u32).unwrap();
        // Replay hello + proof + frame to a new acceptor: its nonce differs, so the proof fails.
        let (a2, _) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
        assert_eq!(
            a2.on_proof(&proof).err().unwrap().reason,
            RejectReason::BadProof
        );
        let _ = frame;
    }

    #[test]
    fn frames_cannot_be_replayed_reordered_reflected_or_forged() {
        let (mut d, mut a) = open_session(&identity(SECRET), &identity(SECRET)).unwrap();
        let f0 = d.sealer.seal(&0u8).unwrap();
        let f1 = d.sealer.seal(&1u8).unwrap();
        // Reordered.
        assert_eq!(
            a.opener.open::<u8>(&f1).err().unwrap().reason,
            RejectReason::BadSequence
        );
        let (mut d, mut a) = open_session(&identity(SECRET), &identity(SECRET)).unwrap();
        let f0b = d.sealer.seal(&0u8).unwrap();
        assert_eq!(a.opener.open::<u8>(&f0b).unwrap(), 0);
        // Replayed.
        assert_eq!(
            a.opener.open::<u8>(&f0b).err().unwrap().reason,
            RejectReason::BadSequence
        );
        // From another session.
        assert_eq!(
            a.opener.open::<u8>(&f0).err().unwrap().reason,
            RejectReason::BadMac
        );
        // Reflected: the acceptor's own frame fed back to it.
        let own = a.sealer.seal(&1u8).unwrap();
        assert_eq!(
            a.opener.open::<u8>(&own).err().unwrap().reason,
            RejectReason::BadMac
        );
        // Tampered.
        let mut bad = d.sealer.seal(&5u8).unwrap();
        bad[1] ^= 1;
        assert_eq!(
            a.opener.open::<u8>(&bad).err().unwrap().reason,
            RejectReason::BadMac
        );
        assert_eq!(
            a.opener.open::<u8>(&[1, 2, 3]).err().unwrap().reason,
            RejectReason::BadMac
        );
    }

    #[test]
    fn garbage_never_panics() {
        let rng = SystemRandom::new();
        let id = identity(SECRET);
        for len in 0..200usize {
            let junk: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            assert!(AcceptorHandshake::on_hello(&id, &rng, &junk).is_err());
            let (d, _) = DialerHandshake::start(&id, &rng).unwrap();
            assert!(d.on_challenge(&junk).is_err());
        }
    }
}
