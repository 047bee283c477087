//! Pairing two tandem nodes with a one-time code (`tandem pair`), sans-IO.
//!
//! This crate owns the pairing protocol: the [`Code`] the secondary shows, the two roles as
//! state machines ([`Initiator`] on the primary, [`Acceptor`] on the secondary), the frames on
//! the wire ([`wire`]) and the key schedule (`keys.rs`). It does no I/O: the CLI (`crates/tandem`,
//! `pair.rs`) moves bytes and time, checks the result with `tandem check`'s logic and writes the
//! files.
//!
//! In short: the primary and the secondary run SPAKE2 (Ed25519 group) with the code as the
//! password and identities that name each role, the cluster and both nodes' addresses. Both
//! confirm the resulting key with an HMAC before anything secret is sent, so a wrong code is
//! detected by both and leaks nothing. Then the primary sends the shared secret and cluster.toml
//! sealed with ChaCha20-Poly1305 under a key derived with HKDF from the SPAKE2 key, and the
//! secondary answers with a sealed outcome once it has checked and written them. An observer
//! of the whole exchange learns the two nodes' names and addresses and the cluster name, and
//! nothing it can test a guess of the code against. The acceptor gives each code one
//! confirmation: a wrong code ends it (see `docs/pairing.md`).

pub mod code;
mod keys;
mod machine;
pub mod wire;

pub use code::{Code, CodeError};
pub use machine::{Acceptor, Event, Initiator, PairError, Paired, Refusal};
pub use wire::{AbortKind, MAX_FRAME, NodeInfo};
/// The secret's container in [`Initiator::new`] and [`Paired`] (zeroed on drop).
pub use zeroize::Zeroizing;

#[cfg(test)]
mod tests;
