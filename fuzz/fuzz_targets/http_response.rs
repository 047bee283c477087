//! `cargo fuzz run http_response`: see `tandem_fuzz::TARGETS` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::http_response(data));
