//! The handshake against itself: wrong secrets, forged, replayed and reflected proofs, version
//! and cluster refusals, frames after the handshake, garbage.

use super::*;
use ring::rand::SystemRandom;

fn identity(secret: &[u8]) -> Identity {
    Identity::new("openstack", Secret::new(secret.to_vec()).unwrap())
}

const SECRET: &[u8] = b"correct horse battery staple, twice";
const OTHER: &[u8] = b"another secret, of enough length too";

fn open_session(
    dialer: &Identity,
    acceptor: &Identity,
) -> Result<(SessionKeys, SessionKeys), Rejection> {
    let rng = SystemRandom::new();
    let (d, hello) = DialerHandshake::start(dialer, &rng)?;
    let (a, challenge) =
        AcceptorHandshake::on_hello(acceptor, &rng, &hello).map_err(|f| f.rejection)?;
    let (proof, d) = d.on_challenge(&challenge)?;
    let (confirm, ak) = a.on_proof(&proof).map_err(|f| f.rejection)?;
    let dk = d.on_confirm(&confirm)?;
    Ok((dk, ak))
}

#[test]
fn matching_secrets_open_a_session_and_frames_flow_both_ways() {
    let (mut d, mut a) = open_session(&identity(SECRET), &identity(SECRET)).unwrap();
    assert_eq!(d.version, PROTOCOL_VERSION);
    assert_eq!(a.version, PROTOCOL_VERSION);
    let f = d.sealer.seal(&"to acceptor".to_string()).unwrap();
    assert_eq!(a.opener.open::<String>(&f).unwrap(), "to acceptor");
    let g = a.sealer.seal(&"to dialer".to_string()).unwrap();
    assert_eq!(d.opener.open::<String>(&g).unwrap(), "to dialer");
}

#[test]
fn the_challenge_carries_nothing_derived_from_the_secret() {
    // The acceptor answers an unauthenticated dialer before it knows anything about it: its
    // answer under two different secrets differs only by the fresh nonce and key share.
    let rng = SystemRandom::new();
    let (_d, hello) = DialerHandshake::start(&identity(SECRET), &rng).unwrap();
    let strip = |payload: &[u8]| match decode_handshake(payload).unwrap() {
        Handshake::Challenge {
            version,
            min_version,
            cluster_id,
            nonce: _,
            share: _,
        } => (version, min_version, cluster_id),
        other => panic!("not a challenge: {other:?}"),
    };
    let (_a1, c1) = AcceptorHandshake::on_hello(&identity(SECRET), &rng, &hello).unwrap();
    let (_a2, c2) = AcceptorHandshake::on_hello(&identity(OTHER), &rng, &hello).unwrap();
    assert_eq!(strip(&c1), strip(&c2));
    assert_eq!(c1.len(), c2.len());
}

#[test]
fn wrong_secret_is_refused_by_the_acceptor_before_it_proves_anything() {
    let rng = SystemRandom::new();
    let (d, hello) = DialerHandshake::start(&identity(OTHER), &rng).unwrap();
    let (a, challenge) = AcceptorHandshake::on_hello(&identity(SECRET), &rng, &hello).unwrap();
    let (proof, d) = d.on_challenge(&challenge).unwrap();
    let failure = a.on_proof(&proof).err().unwrap();
    assert_eq!(failure.rejection.reason, RejectReason::BadProof);
    // The refusal says why, and nothing the dialer could test guesses against.
    let reply = failure.reply.unwrap();
    match decode_handshake(&reply).unwrap() {
        Handshake::Refuse { reason } => {
            assert!(
                reason.contains("bad_proof") && reason.contains("wrong secret"),
                "{reason}"
            );
        }
        other => panic!("not a refusal: {other:?}"),
    }
    let refused = d.on_confirm(&reply).err().unwrap();
    assert_eq!(refused.reason, RejectReason::BadProof);
    // The dialer's log line: the reason once, and the operator's hint once (added by the log).
    let line = crate::reject::RejectLog::default()
        .note("192.168.1.22".parse().unwrap(), &refused, 0)
        .unwrap();
    assert_eq!(line.matches("bad_proof").count(), 1, "{line}");
    assert_eq!(line.matches("is the secret the same").count(), 1, "{line}");
    // A forged proof from a dialer without the secret.
    let (_d, hello) = DialerHandshake::start(&identity(SECRET), &rng).unwrap();
    let (a, _) = AcceptorHandshake::on_hello(&identity(SECRET), &rng, &hello).unwrap();
    let forged = encode_handshake(&Handshake::Proof {
        share: [9; 32],
        proof: [7; 32],
    })
    .unwrap();
    assert_eq!(
        a.on_proof(&forged).err().unwrap().rejection.reason,
        RejectReason::BadProof
    );
}

#[test]
fn a_fake_acceptor_cannot_confirm() {
    // Someone holding the peer's port without the secret: its confirm does not verify.
    let rng = SystemRandom::new();
    let (d, hello) = DialerHandshake::start(&identity(SECRET), &rng).unwrap();
    let (fake, challenge) = AcceptorHandshake::on_hello(&identity(OTHER), &rng, &hello).unwrap();
    let (proof, d) = d.on_challenge(&challenge).unwrap();
    assert!(fake.on_proof(&proof).is_err());
    let forged = encode_handshake(&Handshake::Confirm { proof: [9; 32] }).unwrap();
    assert_eq!(
        d.on_confirm(&forged).err().unwrap().reason,
        RejectReason::BadProof
    );
}

#[test]
fn reflected_proofs_fail() {
    let rng = SystemRandom::new();
    let id = identity(SECRET);
    // The dialer's own proof sent back to it as the acceptor's.
    let (d, hello) = DialerHandshake::start(&id, &rng).unwrap();
    let (_a, challenge) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
    let (proof, d) = d.on_challenge(&challenge).unwrap();
    let Handshake::Proof { proof: p, .. } = decode_handshake(&proof).unwrap() else {
        panic!("not a proof")
    };
    let reflected = encode_handshake(&Handshake::Confirm { proof: p }).unwrap();
    assert_eq!(
        d.on_confirm(&reflected).err().unwrap().reason,
        RejectReason::BadProof
    );
    // The acceptor's confirm sent back to it as the dialer's proof.
    let (d, hello) = DialerHandshake::start(&id, &rng).unwrap();
    let (a, challenge) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
    let (proof, _d) = d.on_challenge(&challenge).unwrap();
    let (a2, _) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
    let (confirm, _) = a.on_proof(&proof).unwrap();
    let Handshake::Confirm { proof: c } = decode_handshake(&confirm).unwrap() else {
        panic!("not a confirm")
    };
    let Handshake::Proof { share, .. } = decode_handshake(&proof).unwrap() else {
        panic!("not a proof")
    };
    let reflected = encode_handshake(&Handshake::Proof { share, proof: c }).unwrap();
    assert_eq!(
        a2.on_proof(&reflected).err().unwrap().rejection.reason,
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
    assert!(
        failure
            .rejection
            .detail
            .contains("this node runs an older tandem")
    );
    // A newer peer whose range includes ours is accepted at our version.
    let mut newer = identity(SECRET);
    newer.version = PROTOCOL_VERSION + 1;
    let (d, _) = open_session(&newer, &identity(SECRET)).unwrap();
    assert_eq!(d.version, PROTOCOL_VERSION);
}

/// A rolling upgrade: each side offers its range and the session speaks the highest common
/// version, whichever side is newer and whichever dials; both sides learn what the other offered
/// (the primary holds its config push to a newer peer). No common version is refused both ways.
#[test]
fn the_highest_common_version_is_negotiated_both_ways() {
    let current = |max: u16, min: u16| {
        let mut id = identity(SECRET);
        id.version = max;
        id.min_version = min;
        id
    };
    for (older, newer, common) in [
        ((2, 2), (3, 2), 2),
        ((3, 2), (4, 3), 3),
        ((3, 2), (3, 2), 3),
    ] {
        let older = current(older.0, older.1);
        let newer = current(newer.0, newer.1);
        for (dialer, acceptor) in [(&older, &newer), (&newer, &older)] {
            let (d, a) = open_session(dialer, acceptor).unwrap();
            assert_eq!((d.version, a.version), (common, common));
            assert_eq!(d.offered, (dialer.version, acceptor.version));
            assert_eq!(a.offered, (acceptor.version, dialer.version));
        }
    }
    // Two releases apart with no overlap: refused with the ranges, explicitly to the dialer too.
    let rng = SystemRandom::new();
    let (d, hello) = DialerHandshake::start(&current(2, 2), &rng).unwrap();
    let failure = AcceptorHandshake::on_hello(&current(4, 3), &rng, &hello)
        .err()
        .unwrap();
    assert_eq!(failure.rejection.reason, RejectReason::VersionUnsupported);
    assert!(
        failure
            .rejection
            .detail
            .contains("peer speaks protocol versions 2..=2, we speak 3..=4")
    );
    let refused = d.on_challenge(&failure.reply.unwrap()).err().unwrap();
    assert_eq!(refused.reason, RejectReason::RefusedByPeer);
    assert!(
        refused.detail.contains("version_unsupported"),
        "{}",
        refused.detail
    );
}

#[test]
fn a_version_1_peer_is_refused_explicitly_both_ways() {
    let rng = SystemRandom::new();
    // A version-1 dialer's hello has the same shape: the refusal names the versions.
    let mut v1 = identity(SECRET);
    v1.version = 1;
    v1.min_version = 1;
    let (_d, hello) = DialerHandshake::start(&v1, &rng).unwrap();
    let failure = AcceptorHandshake::on_hello(&identity(SECRET), &rng, &hello)
        .err()
        .unwrap();
    assert_eq!(failure.rejection.reason, RejectReason::VersionUnsupported);
    let detail = &failure.rejection.detail;
    assert!(
        detail.contains("1..=1") && detail.contains("peer runs an older tandem"),
        "{detail}"
    );
    // The refusal a version-1 build decodes: variant 3 with one string, as in version 1.
    let reply = failure.reply.unwrap();
    assert_eq!(reply[0], 3);
    // A version-1 acceptor refuses our hello the same way; we report its reason.
    let (d, _) = DialerHandshake::start(&identity(SECRET), &rng).unwrap();
    let v1_refusal = encode_handshake(&Handshake::Refuse {
        reason: "version_unsupported: peer speaks protocol versions 2..=2, we speak 1..=1".into(),
    })
    .unwrap();
    let refused = d.on_challenge(&v1_refusal).err().unwrap();
    assert_eq!(refused.reason, RejectReason::RefusedByPeer);
    assert!(refused.detail.contains("we speak 1..=1"));
    // A version-1 challenge (the acceptor's proof where ours has its key share) is refused
    // for its version.
    let (d, _) = DialerHandshake::start(&identity(SECRET), &rng).unwrap();
    let mut v1_challenge = wire::encode(&(1u32, 1u16, 1u16, "openstack", [0u8; 32])).unwrap();
    v1_challenge.extend_from_slice(&[0u8; 32]);
    assert!(d.on_challenge(&v1_challenge).is_err());
}

#[test]
fn replayed_sessions_fail_against_fresh_nonces() {
    let rng = SystemRandom::new();
    let id = identity(SECRET);
    let (d, hello) = DialerHandshake::start(&id, &rng).unwrap();
    let (a, challenge) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
    let (proof, d) = d.on_challenge(&challenge).unwrap();
    let (confirm, _ak) = a.on_proof(&proof).unwrap();
    let mut dk = d.on_confirm(&confirm).unwrap();
    let frame = dk.sealer.seal(&1u32).unwrap();
    // Replay hello + proof to a new acceptor: its nonce differs, so the proof fails.
    let (a2, _) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
    assert_eq!(
        a2.on_proof(&proof).err().unwrap().rejection.reason,
        RejectReason::BadProof
    );
    // Replay challenge + confirm to a new dialer: its nonce differs, so the confirm fails.
    let (d2, _) = DialerHandshake::start(&id, &rng).unwrap();
    let (_, d2) = d2.on_challenge(&challenge).unwrap();
    assert_eq!(
        d2.on_confirm(&confirm).err().unwrap().reason,
        RejectReason::BadProof
    );
    // And the recorded frame opens under no other session's keys.
    let (_d3, mut a3) = open_session(&id, &id).unwrap();
    assert_eq!(
        a3.opener.open::<u32>(&frame).err().unwrap().reason,
        RejectReason::BadMac
    );
}

#[test]
fn frames_cannot_be_replayed_reordered_reflected_or_forged() {
    let (mut d, mut a) = open_session(&identity(SECRET), &identity(SECRET)).unwrap();
    let f0 = d.sealer.seal(&0u8).unwrap();
    let f1 = d.sealer.seal(&1u8).unwrap();
    // Reordered: the nonce is the receiver's counter, so the tag fails.
    assert_eq!(
        a.opener.open::<u8>(&f1).err().unwrap().reason,
        RejectReason::BadMac
    );
    let (mut d, mut a) = open_session(&identity(SECRET), &identity(SECRET)).unwrap();
    let f0b = d.sealer.seal(&0u8).unwrap();
    assert_eq!(a.opener.open::<u8>(&f0b).unwrap(), 0);
    // Replayed.
    assert_eq!(
        a.opener.open::<u8>(&f0b).err().unwrap().reason,
        RejectReason::BadMac
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
    // Tampered, truncated.
    let mut bad = d.sealer.seal(&5u8).unwrap();
    bad[0] ^= 1;
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
        let (d, hello) = DialerHandshake::start(&id, &rng).unwrap();
        assert!(
            DialerHandshake::start(&id, &rng)
                .unwrap()
                .0
                .on_challenge(&junk)
                .is_err()
        );
        let (a, challenge) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
        let (_, d) = d.on_challenge(&challenge).unwrap();
        assert!(a.on_proof(&junk).is_err());
        assert!(d.on_confirm(&junk).is_err());
    }
}
