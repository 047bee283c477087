//! What a session ticket costs the proxy: nanoseconds per ticket issued (encrypt) and per ticket opened (decrypt)
//! by the pair's shared ticketer (`tls/tickets.rs`) and by rustls' own ring ticketer, one thread, 200,000 tickets
//! of 160 bytes per round, five rounds. Run: `cargo run --release -p tandem-proxy --example ticket_cost`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use rustls::server::ProducesTickets;
use tandem_proxy::tls::tickets::{SharedTicketer, TicketSecret};

const TICKETS: usize = 200_000;

/// (ns per encrypt, ns per decrypt).
fn round(ticketer: &dyn ProducesTickets) -> (f64, f64) {
    let plain = vec![7u8; 160];
    let start = Instant::now();
    let tickets: Vec<Vec<u8>> = (0..TICKETS)
        .map(|_| ticketer.encrypt(&plain).unwrap())
        .collect();
    let encrypt = start.elapsed().as_nanos() as f64 / TICKETS as f64;
    let start = Instant::now();
    for ticket in &tickets {
        assert!(ticketer.decrypt(ticket).is_some());
    }
    let decrypt = start.elapsed().as_nanos() as f64 / TICKETS as f64;
    (encrypt, decrypt)
}

fn main() {
    let secret = TicketSecret::from_cluster_secret(b"0123456789abcdef0123456789abcdef");
    let shared = SharedTicketer::new(
        &secret,
        "web",
        Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        }),
    );
    let rustls_own = rustls::crypto::ring::Ticketer::new().unwrap();
    for i in 0..5 {
        let (se, sd) = round(&shared);
        let (re, rd) = round(rustls_own.as_ref());
        println!(
            "round {i}: shared encrypt {se:.0} ns, decrypt {sd:.0} ns | rustls encrypt {re:.0} ns, decrypt {rd:.0} ns"
        );
    }
}
