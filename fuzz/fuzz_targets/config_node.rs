//! `cargo fuzz run config_node`: see `tandem_fuzz::TARGETS` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::config_node(data));
