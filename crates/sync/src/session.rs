//! One authenticated session, sans-IO: sealing/opening (encrypting/decrypting) the messages of both state machines,
//! keepalive and silence timeouts (the engine decides when they are checked).

use serde::{Deserialize, Serialize};

use crate::config_push::ConfigMsg;
use crate::handshake::SessionKeys;
use crate::reject::{RejectReason, Rejection};
use crate::replication::ReplMsg;

/// Every message after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Repl(ReplMsg),
    Config(ConfigMsg),
}

/// Timing of a session (milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct SessionTimers {
    /// Send something at least this often (the keepalive carries table sizes).
    pub keepalive_ms: u64,
    /// Close the session when nothing was heard for this long.
    pub peer_timeout_ms: u64,
}

impl Default for SessionTimers {
    fn default() -> Self {
        Self {
            keepalive_ms: 1_000,
            peer_timeout_ms: 5_000,
        }
    }
}

/// The framing state of one open session.
pub struct Session {
    keys: SessionKeys,
    max_frame: usize,
    timers: SessionTimers,
    last_rx_ms: u64,
    last_tx_ms: u64,
}

impl Session {
    pub fn new(keys: SessionKeys, max_frame: usize, timers: SessionTimers, now: u64) -> Self {
        Self {
            keys,
            max_frame,
            timers,
            last_rx_ms: now,
            last_tx_ms: now,
        }
    }

    /// Protocol version negotiated for this session.
    pub fn version(&self) -> u16 {
        self.keys.version
    }

    /// The newest protocol version each side offered: (ours, the peer's).
    pub fn offered(&self) -> (u16, u16) {
        self.keys.offered
    }

    /// Seals the next outgoing message.
    pub fn seal(&mut self, message: &Message, now: u64) -> Result<Vec<u8>, Rejection> {
        let frame = self.keys.sealer.seal(message)?;
        if frame.len() > self.max_frame {
            return Err(Rejection::new(
                RejectReason::FrameTooLarge,
                format!(
                    "outgoing frame of {} bytes exceeds the {} byte limit",
                    frame.len(),
                    self.max_frame
                ),
            ));
        }
        self.last_tx_ms = now;
        Ok(frame)
    }

    /// Authenticates and decodes one incoming frame; any error is final for the session.
    pub fn open(&mut self, payload: &[u8], now: u64) -> Result<Message, Rejection> {
        let message = self.keys.opener.open(payload)?;
        self.last_rx_ms = now;
        Ok(message)
    }

    /// When the last frame was opened (the session's start before any).
    pub fn last_rx_ms(&self) -> u64 {
        self.last_rx_ms
    }

    pub fn keepalive_due(&self, now: u64) -> bool {
        now.saturating_sub(self.last_tx_ms) >= self.timers.keepalive_ms
    }

    /// `Err(PeerTimeout)` when the peer has been silent too long.
    pub fn check_silence(&self, now: u64) -> Result<(), Rejection> {
        let silent = now.saturating_sub(self.last_rx_ms);
        if silent >= self.timers.peer_timeout_ms {
            return Err(Rejection::new(
                RejectReason::PeerTimeout,
                format!("nothing heard from the peer for {silent} ms"),
            ));
        }
        Ok(())
    }

    pub fn frames_sealed(&self) -> u64 {
        self.keys.sealer.next_seq()
    }

    pub fn frames_opened(&self) -> u64 {
        self.keys.opener.expected_seq()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{AcceptorHandshake, DialerHandshake, Identity};
    use ring::rand::SystemRandom;
    use tandem_types::Secret;

    fn pair() -> (Session, Session) {
        let id = Identity::new(
            "c",
            Secret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap(),
        );
        let rng = SystemRandom::new();
        let (d, hello) = DialerHandshake::start(&id, &rng).unwrap();
        let (a, ch) = AcceptorHandshake::on_hello(&id, &rng, &hello).unwrap();
        let (proof, d) = d.on_challenge(&ch).unwrap();
        let (confirm, ak) = a.on_proof(&proof).unwrap();
        let dk = d.on_confirm(&confirm).unwrap();
        (
            Session::new(dk, 1024, SessionTimers::default(), 0),
            Session::new(ak, 1024, SessionTimers::default(), 0),
        )
    }

    #[test]
    fn keepalive_timeout_and_size_limit() {
        let (mut d, mut a) = pair();
        assert!(!d.keepalive_due(999) && d.keepalive_due(1000));
        let m = Message::Repl(ReplMsg::RequestResync {
            tables: vec!["x".into()],
        });
        let f = d.seal(&m, 1000).unwrap();
        assert_eq!(a.open(&f, 4000).unwrap(), m);
        assert!(a.check_silence(8999).is_ok());
        assert_eq!(
            a.check_silence(9000).unwrap_err().reason,
            RejectReason::PeerTimeout
        );
        let big = Message::Repl(ReplMsg::RequestResync {
            tables: vec!["y".repeat(2000)],
        });
        assert_eq!(
            d.seal(&big, 1).unwrap_err().reason,
            RejectReason::FrameTooLarge
        );
    }
}
