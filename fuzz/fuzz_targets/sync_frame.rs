//! `cargo fuzz run sync_frame`: see `tandem_fuzz::TARGETS` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::sync_frame(data));
