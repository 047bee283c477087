//! The fuzz targets of tandem's decoders and parsers, as plain functions: `fuzz_targets/` hands them to libFuzzer
//! (`cargo fuzz run NAME`), and `tests/replay.rs` feeds them every file of `corpus/NAME/` without the fuzzer (what
//! CI runs). Each target checks properties of what it decodes, not only that nothing panics; a broken property
//! panics, which libFuzzer reports as a crash with the input.
#![allow(clippy::unwrap_used)]

mod config;
mod heartbeat;
mod http;
mod sync;

pub use config::{config_cluster, config_node};
pub use heartbeat::heartbeat;
pub use http::{chunked, http_request, http_response};
pub use sync::{sync_frame, sync_handshake};

/// A fuzz target: panics when a property does not hold.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its binary and of its corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("http_request", http_request),
    ("http_response", http_response),
    ("chunked", chunked),
    ("heartbeat", heartbeat),
    ("sync_frame", sync_frame),
    ("sync_handshake", sync_handshake),
    ("config_cluster", config_cluster),
    ("config_node", config_node),
];
