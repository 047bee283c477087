//! The sync session's decoders: handshake messages (before authentication) and sealed frames (after).

use std::cell::RefCell;

use ring::rand::SystemRandom;
use serde::ser::{Serialize, SerializeTuple, Serializer};
use tandem_sync::Identity;
use tandem_sync::frame::{Opener, Sealer};
use tandem_sync::handshake::{AcceptorHandshake, DialerHandshake, Handshake};
use tandem_sync::session::Message;
use tandem_sync::wire;
use tandem_types::Secret;

const CLUSTER: &str = "fuzz";
const SECRET: &[u8] = b"a shared secret of at least thirty-two bytes, for fuzzing";

fn identity() -> Identity {
    Identity::new(CLUSTER, Secret::new(SECRET.to_vec()).unwrap())
}

/// Bytes that bincode writes as they are (a tuple of `u8`: no length): sealing `Raw(x)` encrypts exactly `x`, so
/// the fuzzer's bytes reach the decoder behind a frame that authenticates.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

/// A dialer's sealer and the acceptor's matching opener, from a real handshake.
fn session() -> (Sealer, Opener) {
    let rng = SystemRandom::new();
    let id = identity();
    let (dialer, hello) = DialerHandshake::start(&id, &rng).unwrap();
    let (acceptor, challenge) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
    let (proof, waiting) = dialer.on_challenge(&challenge).unwrap();
    let (confirm, acceptor_keys) = acceptor.on_proof(&proof).unwrap();
    let dialer_keys = waiting.on_confirm(&confirm).unwrap();
    (dialer_keys.sealer, acceptor_keys.opener)
}

thread_local! {
    static SESSION: RefCell<(Sealer, Opener)> = RefCell::new(session());
}

/// Frames after the handshake. The input decodes as a message the same way behind an authenticating frame as
/// on its own, and a decoded message encodes back to an equal one. The input itself, or a sealed frame with one
/// bit flipped, never opens (no key, no forgery).
pub fn sync_frame(data: &[u8]) {
    let decoded = wire::decode::<Message>(data);
    if let Ok(m) = &decoded {
        let bytes = wire::encode(m).unwrap();
        assert_eq!(&wire::decode::<Message>(&bytes).unwrap(), m);
    }
    SESSION.with(|s| {
        let (sealer, opener) = &mut *s.borrow_mut();
        assert!(
            opener.open::<Message>(data).is_err(),
            "unsealed bytes opened"
        );
        let sealed = sealer.seal(&Raw(data)).unwrap();
        let mut flipped = sealed.clone();
        let i = data.first().map_or(0, |&b| usize::from(b)) % flipped.len();
        flipped[i] ^= 1 << (data.len() % 8);
        assert!(
            opener.open::<Message>(&flipped).is_err(),
            "an altered frame opened"
        );
        match (opener.open::<Message>(&sealed), &decoded) {
            (Ok(m), Ok(d)) => assert_eq!(&m, d),
            (Err(_), Err(_)) => {}
            (opened, _) => panic!(
                "opened {opened:?} but decoded {decoded:?}",
                decoded = decoded.as_ref().map_err(|e| e.to_string())
            ),
        }
    });
}

/// Handshake messages, each step of both sides (the first byte picks which). The rest of the input, taken as the
/// peer's message: an acceptor's answer to a hello is a challenge for our cluster; a confirm or a proof
/// nobody computed with the secret never completes a handshake; a decoded message encodes back to an equal one.
pub fn sync_handshake(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let rng = SystemRandom::new();
    let id = identity();
    match mode % 4 {
        0 => {
            if let Ok((_, challenge)) = AcceptorHandshake::on_hello(&id, &rng, rest) {
                assert!(matches!(
                    wire::decode::<Handshake>(&challenge),
                    Ok(Handshake::Challenge { cluster_id, .. }) if cluster_id == CLUSTER
                ));
            }
        }
        1 => {
            let (dialer, _) = DialerHandshake::start(&id, &rng).unwrap();
            if let Ok((proof, waiting)) = dialer.on_challenge(rest) {
                assert!(matches!(
                    wire::decode::<Handshake>(&proof),
                    Ok(Handshake::Proof { .. })
                ));
                assert!(
                    waiting.on_confirm(rest).is_err(),
                    "a forged confirm completed the handshake"
                );
            }
        }
        2 => {
            let (_, hello) = DialerHandshake::start(&id, &rng).unwrap();
            let (acceptor, _) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
            assert!(
                acceptor.on_proof(rest).is_err(),
                "a forged proof completed the handshake"
            );
        }
        _ => {
            if let Ok(m) = wire::decode::<Handshake>(rest) {
                let bytes = wire::encode(&m).unwrap();
                assert_eq!(wire::decode::<Handshake>(&bytes).unwrap(), m);
            }
        }
    }
}
