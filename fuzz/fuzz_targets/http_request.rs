//! `cargo fuzz run http_request`: see `tandem_fuzz::TARGETS` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::http_request(data));
