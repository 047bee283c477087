//! The heartbeat datagram decoder (`tandem_cluster::wire::HeartbeatCodec::decode`).

use std::sync::OnceLock;

use ring::hmac;
use tandem_cluster::wire::{HeartbeatCodec, MAGIC, MAX_DATAGRAM, WIRE_VERSION};
use tandem_types::Secret;

const CLUSTER: &str = "fuzz";
const SECRET: &[u8] = b"a shared secret of at least thirty-two bytes, for fuzzing";

fn codec() -> &'static (HeartbeatCodec, hmac::Key) {
    static CODEC: OnceLock<(HeartbeatCodec, hmac::Key)> = OnceLock::new();
    CODEC.get_or_init(|| {
        let secret = Secret::new(SECRET.to_vec()).unwrap();
        (
            HeartbeatCodec::new(CLUSTER, &secret),
            hmac::Key::new(hmac::HMAC_SHA256, SECRET),
        )
    })
}

/// The first byte picks the mode. Odd: the rest is a whole datagram as it comes off the wire (nearly always
/// refused before the body: size, magic, version, tag). Even: the rest is a body, framed and signed with the key,
/// so the fuzzer reaches the body decoder. A decoded heartbeat is of this cluster, and encodes again to a datagram
/// that decodes to an equal heartbeat.
pub fn heartbeat(data: &[u8]) {
    let (codec, key) = codec();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let decoded = if mode & 1 == 1 {
        codec.decode(rest)
    } else {
        let mut datagram = Vec::with_capacity(rest.len() + 38);
        datagram.extend_from_slice(&MAGIC);
        datagram.extend_from_slice(&WIRE_VERSION.to_be_bytes());
        datagram.extend_from_slice(rest);
        let tag = hmac::sign(key, &datagram);
        datagram.extend_from_slice(tag.as_ref());
        let decoded = codec.decode(&datagram);
        if datagram.len() <= MAX_DATAGRAM {
            // Signed with the key: only the body can be refused.
            assert!(
                !matches!(
                    decoded,
                    Err(tandem_cluster::wire::Reject::BadMac
                        | tandem_cluster::wire::Reject::BadVersion)
                ),
                "{decoded:?}"
            );
        }
        decoded
    };
    if let Ok(hb) = decoded {
        assert_eq!(hb.cluster, CLUSTER);
        let again = codec.encode(&hb).expect("a decoded heartbeat encodes");
        assert!(again.len() <= MAX_DATAGRAM);
        assert_eq!(codec.decode(&again), Ok(hb));
    }
}
