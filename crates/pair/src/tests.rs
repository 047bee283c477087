#![allow(clippy::unwrap_used)]
//! Both roles against each other in memory, with the wire in between under the test's control.

use super::*;
use proptest::prelude::*;
use ring::rand::SystemRandom;
use zeroize::Zeroizing;

const TIMEOUT: u64 = 60_000;

fn primary_info() -> NodeInfo {
    NodeInfo {
        name: "lb1".into(),
        address: "192.0.2.21".parse().unwrap(),
        heartbeat_port: 6694,
        sync_port: 7778,
    }
}

fn secondary_info() -> NodeInfo {
    NodeInfo {
        name: "lb2".into(),
        address: "192.0.2.22".parse().unwrap(),
        ..primary_info()
    }
}

fn secret() -> Zeroizing<Vec<u8>> {
    Zeroizing::new(b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_vec())
}

const CLUSTER_TOML: &str = "[cluster]\nname = \"openstack\"\n# comment kept\n";

fn new_code() -> Code {
    Code::generate(&SystemRandom::new()).unwrap()
}

/// How a run ended on each side.
#[derive(Debug)]
struct Run {
    primary: Result<Paired, PairError>,
    secondary: Result<Paired, PairError>,
    /// Everything the secondary saw arrive (what an observer on the wire sees one way).
    to_secondary: Vec<u8>,
    to_primary: Vec<u8>,
    code_consumed: bool,
}

/// Runs a session. `tamper(direction_to_secondary, chunk_index, bytes)` may change each chunk in
/// flight; `secondary_verdict` decides what the secondary's caller does with a received payload.
fn run_with(
    primary_code: Code,
    secondary_code: Code,
    mut tamper: impl FnMut(bool, usize, &mut Vec<u8>),
    secondary_verdict: impl Fn(&Paired) -> Option<Refusal>,
) -> Run {
    let mut initiator = Initiator::new(
        primary_code,
        "openstack",
        primary_info(),
        secret(),
        CLUSTER_TOML.to_string(),
        0,
        TIMEOUT,
    )
    .unwrap();
    let mut acceptor = Acceptor::new(secondary_code, secondary_info(), 0, TIMEOUT);
    let mut primary: Option<Result<Paired, PairError>> = None;
    let mut secondary: Option<Result<Paired, PairError>> = None;
    let mut received: Option<Paired> = None;
    let (mut to_secondary, mut to_primary) = (Vec::new(), Vec::new());
    let (mut chunks_s, mut chunks_p) = (0, 0);
    // Bounded: the exchange has six frames.
    for _ in 0..32 {
        let mut moved = false;
        while let Some(mut bytes) = initiator.poll_transmit() {
            moved = true;
            tamper(true, chunks_s, &mut bytes);
            chunks_s += 1;
            to_secondary.extend_from_slice(&bytes);
            let mut input: &[u8] = &bytes;
            loop {
                match acceptor.handle_bytes(input, 1) {
                    Ok(Some(Event::PeerHello { .. })) => {
                        if let Err(e) = acceptor.proceed() {
                            secondary.get_or_insert(Err(e));
                            break;
                        }
                    }
                    Ok(Some(Event::Received(paired))) => match secondary_verdict(&paired) {
                        None => {
                            acceptor.accept().unwrap();
                            received = Some(paired);
                        }
                        Some(refusal) => {
                            secondary.get_or_insert(Err(acceptor.refuse(refusal)));
                        }
                    },
                    Ok(Some(other)) => panic!("secondary got {other:?}"),
                    Ok(None) => break,
                    Err(e) => {
                        secondary.get_or_insert(Err(e));
                        break;
                    }
                }
                input = &[];
            }
        }
        while let Some(mut bytes) = acceptor.poll_transmit() {
            moved = true;
            tamper(false, chunks_p, &mut bytes);
            chunks_p += 1;
            to_primary.extend_from_slice(&bytes);
            let mut input: &[u8] = &bytes;
            loop {
                match initiator.handle_bytes(input, 1) {
                    Ok(Some(Event::PeerHello { .. })) => {
                        if let Err(e) = initiator.proceed() {
                            primary.get_or_insert(Err(e));
                            break;
                        }
                    }
                    Ok(Some(Event::Accepted(paired))) => {
                        primary.get_or_insert(Ok(paired));
                    }
                    Ok(Some(other)) => panic!("primary got {other:?}"),
                    Ok(None) => break,
                    Err(e) => {
                        primary.get_or_insert(Err(e));
                        break;
                    }
                }
                input = &[];
            }
        }
        if !moved {
            break;
        }
    }
    if let Some(paired) = received {
        secondary.get_or_insert(Ok(paired));
    }
    // A side still waiting when the wire fell silent: the peer closed the connection.
    let primary = primary.unwrap_or_else(|| Err(initiator.handle_eof().unwrap_err()));
    let secondary = secondary.unwrap_or_else(|| Err(acceptor.handle_eof().unwrap_err()));
    Run {
        primary,
        secondary,
        to_secondary,
        to_primary,
        code_consumed: acceptor.code_consumed(),
    }
}

fn run(primary_code: Code, secondary_code: Code) -> Run {
    run_with(primary_code, secondary_code, |_, _, _| {}, |_| None)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_right_code_gives_both_sides_the_same_payload() {
    let code = new_code();
    let r = run(code.clone(), code);
    let primary = r.primary.unwrap();
    let secondary = r.secondary.unwrap();
    assert_eq!(secondary.secret, secret());
    assert_eq!(secondary.cluster_toml, CLUSTER_TOML);
    assert_eq!(secondary.cluster_name, "openstack");
    assert_eq!(secondary.peer, primary_info());
    assert_eq!(primary.peer, secondary_info());
    assert_eq!(primary.secret, secondary.secret);
    assert_eq!(primary.cluster_toml, secondary.cluster_toml);
    assert!(r.code_consumed);
    // The observer's view: neither the secret nor cluster.toml nor the code crosses in clear.
    for wire in [&r.to_secondary, &r.to_primary] {
        assert!(!contains(wire, &secret()[..16]));
        assert!(!contains(wire, b"comment kept"));
    }
    assert!(format!("{secondary:?}").contains("redacted"));
    assert!(!format!("{secondary:?}").contains("0123456789abcdef"));
}

#[test]
fn a_wrong_code_fails_on_both_sides_and_sends_no_payload() {
    let r = run(new_code(), new_code());
    assert_eq!(r.secondary.unwrap_err(), PairError::WrongCode);
    assert_eq!(r.primary.unwrap_err(), PairError::WrongCode);
    assert!(r.code_consumed, "one wrong try uses the code up");
    // The primary never sent its payload frame (kind 5) nor anything sealed.
    assert!(!contains(&r.to_secondary, &secret()[..16]));
    let mut d = wire::Deframer::default();
    d.push(&r.to_secondary).unwrap();
    while let Some(body) = d.next_body().unwrap() {
        assert!(
            !matches!(wire::Frame::decode(&body), Ok(wire::Frame::Payload { .. })),
            "a payload crossed with a wrong code"
        );
    }
    let shown = PairError::WrongCode.to_string();
    assert!(shown.starts_with("wrong code"), "{shown}");
}

#[test]
fn a_refused_hello_does_not_use_the_code_up() {
    let code = new_code();
    let mut initiator = Initiator::new(
        code.clone(),
        "openstack",
        primary_info(),
        secret(),
        CLUSTER_TOML.into(),
        0,
        TIMEOUT,
    )
    .unwrap();
    let mut acceptor = Acceptor::new(code, secondary_info(), 0, TIMEOUT);
    let hello = initiator.poll_transmit().unwrap();
    let event = acceptor.handle_bytes(&hello, 1).unwrap();
    assert!(matches!(event, Some(Event::PeerHello { .. })));
    let e = acceptor.refuse(Refusal::incompatible(
        "the peer uses heartbeat port 6695, this node 6694",
    ));
    assert!(e.to_string().contains("6695"), "{e}");
    assert!(!acceptor.code_consumed());
    let abort = acceptor.poll_transmit().unwrap();
    let e = initiator.handle_bytes(&abort, 2).unwrap_err();
    assert!(
        matches!(&e, PairError::PeerRefused(d) if d.contains("6695")),
        "{e}"
    );
}

#[test]
fn a_secondary_refusal_after_the_payload_reaches_the_primary_sealed() {
    let code = new_code();
    let r = run_with(
        code.clone(),
        code,
        |_, _, _| {},
        |_| {
            Some(Refusal::already_paired(
                "lb2 already belongs to cluster \"other\"",
            ))
        },
    );
    let e = r.primary.unwrap_err();
    assert!(
        matches!(&e, PairError::PeerAlreadyPaired(d) if d.contains("other")),
        "{e}"
    );
    assert!(e.to_string().starts_with("peer already paired"), "{e}");
    assert!(r.secondary.is_err());
}

#[test]
fn timeouts_name_what_was_awaited() {
    let mut initiator = Initiator::new(
        new_code(),
        "openstack",
        primary_info(),
        secret(),
        CLUSTER_TOML.into(),
        1_000,
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(initiator.deadline_ms(), 61_000);
    initiator.handle_timeout(60_999).unwrap();
    let e = initiator.handle_timeout(61_000).unwrap_err();
    assert_eq!(e, PairError::TimedOut("waiting for the secondary's hello"));
    assert!(e.to_string().starts_with("timed out"), "{e}");
    assert!(initiator.is_finished());
    // The peer is told.
    let _hello = initiator.poll_transmit().unwrap();
    let abort = initiator.poll_transmit().unwrap();
    let mut acceptor = Acceptor::new(new_code(), secondary_info(), 0, TIMEOUT);
    let e = acceptor.handle_bytes(&abort, 1).unwrap_err();
    assert!(matches!(e, PairError::PeerTimedOut(_)), "{e}");

    let mut acceptor = Acceptor::new(new_code(), secondary_info(), 0, 10);
    let e = acceptor.handle_bytes(&[0, 0], 10).unwrap_err();
    assert!(matches!(e, PairError::TimedOut(_)), "{e}");
}

#[test]
fn an_oversized_frame_is_refused_at_its_length() {
    let mut acceptor = Acceptor::new(new_code(), secondary_info(), 0, TIMEOUT);
    let e = acceptor
        .handle_bytes(&(MAX_FRAME as u32 + 1).to_be_bytes(), 1)
        .unwrap_err();
    assert!(
        matches!(e, PairError::Wire(wire::WireError::TooLong { .. })),
        "{e}"
    );
    assert!(!acceptor.code_consumed());
}

#[test]
fn a_sync_dialer_on_the_pairing_port_is_told_off_without_using_the_code() {
    let mut acceptor = Acceptor::new(new_code(), secondary_info(), 0, TIMEOUT);
    let mut frame = vec![0, 0, 0, 12, 1];
    frame.extend_from_slice(b"TNDMSYNC\x02\x00\x00");
    let e = acceptor.handle_bytes(&frame, 1).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
    assert!(!acceptor.code_consumed());
}

#[test]
fn inputs_out_of_bounds_are_refused_before_connecting() {
    let short = Zeroizing::new(vec![1u8; 8]);
    let e = Initiator::new(new_code(), "c", primary_info(), short, String::new(), 0, 1)
        .err()
        .unwrap();
    assert!(e.to_string().contains("8 bytes"), "{e}");
    let big = "x".repeat(MAX_FRAME);
    assert!(Initiator::new(new_code(), "c", primary_info(), secret(), big, 0, 1).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any change to any byte of any frame, either way: both sides end in an error or (when the
    /// change hit nothing that matters, which the format leaves no room for) identical payloads;
    /// never a panic, never a payload that differs from the primary's.
    #[test]
    fn tampered_frames_fail_cleanly(to_secondary in any::<bool>(), chunk in 0usize..3, at in 0usize..4096, bit in 0u8..8) {
        let code = new_code();
        let r = run_with(code.clone(), code, |dir, index, bytes| {
            if dir == to_secondary && index == chunk && !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] ^= 1 << bit;
            }
        }, |_| None);
        if let Ok(s) = &r.secondary {
            prop_assert_eq!(&s.secret, &secret());
            prop_assert_eq!(&s.cluster_toml, CLUSTER_TOML);
        }
        if let Ok(p) = &r.primary {
            prop_assert_eq!(&p.peer, &secondary_info());
        }
        // A changed hello or key message changes the keys: the code check fails.
        prop_assert!(r.primary.is_err() || r.secondary.is_ok());
    }

    /// A frame cut short, then the connection closed: an error, no panic.
    #[test]
    fn truncated_frames_fail_cleanly(to_secondary in any::<bool>(), chunk in 0usize..3, keep in 0usize..64) {
        let code = new_code();
        let r = run_with(code.clone(), code, |dir, index, bytes| {
            if dir == to_secondary && index == chunk {
                bytes.truncate(keep.min(bytes.len().saturating_sub(1)));
            }
        }, |_| None);
        prop_assert!(r.primary.is_err());
        // Only a cut outcome leaves the secondary done (it wrote before answering); the primary
        // then writes nothing and says the pairing did not finish.
        prop_assert!(r.secondary.is_err() || (!to_secondary && chunk == 2));
    }

    /// Garbage thrown at either role never panics and never produces an event past the hello.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut acceptor = Acceptor::new(new_code(), secondary_info(), 0, TIMEOUT);
        if let Ok(Some(event)) = acceptor.handle_bytes(&bytes, 1) {
            prop_assert!(matches!(event, Event::PeerHello { .. }), "{event:?}");
        }
        prop_assert!(!acceptor.code_consumed());
        let mut initiator = Initiator::new(new_code(), "openstack", primary_info(), secret(), CLUSTER_TOML.into(), 0, TIMEOUT).unwrap();
        if let Ok(Some(event)) = initiator.handle_bytes(&bytes, 1) {
            prop_assert!(matches!(event, Event::PeerHello { .. }), "{event:?}");
        }
    }
}

/// The secondary checks the primary's confirmation itself: it answers a wrong one with an abort,
/// never with its own confirmation (which would give a guesser something to test offline).
#[test]
fn the_secondary_alone_detects_a_wrong_code() {
    let mut initiator = Initiator::new(
        new_code(),
        "openstack",
        primary_info(),
        secret(),
        CLUSTER_TOML.into(),
        0,
        TIMEOUT,
    )
    .unwrap();
    let mut acceptor = Acceptor::new(new_code(), secondary_info(), 0, TIMEOUT);
    let hello = initiator.poll_transmit().unwrap();
    assert!(matches!(
        acceptor.handle_bytes(&hello, 1),
        Ok(Some(Event::PeerHello { .. }))
    ));
    acceptor.proceed().unwrap();
    let answer = acceptor.poll_transmit().unwrap();
    assert!(matches!(
        initiator.handle_bytes(&answer, 2),
        Ok(Some(Event::PeerHello { .. }))
    ));
    initiator.proceed().unwrap();
    let key = initiator.poll_transmit().unwrap();
    assert_eq!(acceptor.handle_bytes(&key, 3), Err(PairError::WrongCode));
    assert!(acceptor.code_consumed());
    let reply = acceptor.poll_transmit().unwrap();
    assert!(matches!(
        wire::Frame::decode(&reply[4..]),
        Ok(wire::Frame::Abort {
            kind: AbortKind::WrongCode,
            ..
        })
    ));
    assert!(acceptor.poll_transmit().is_none());
}

/// The primary checks the secondary's confirmation before it sends anything secret.
#[test]
fn the_primary_sends_nothing_secret_after_a_bad_confirmation() {
    let code = new_code();
    let r = run_with(
        code.clone(),
        code,
        |to_secondary, index, bytes| {
            // The secondary's confirmation (its second frame): one bit of the MAC flipped.
            if !to_secondary && index == 1 {
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
            }
        },
        |_| None,
    );
    assert_eq!(r.primary.unwrap_err(), PairError::WrongCode);
    assert!(r.secondary.is_err());
    let mut d = wire::Deframer::default();
    d.push(&r.to_secondary).unwrap();
    while let Some(body) = d.next_body().unwrap() {
        assert!(!matches!(
            wire::Frame::decode(&body),
            Ok(wire::Frame::Payload { .. })
        ));
    }
}
