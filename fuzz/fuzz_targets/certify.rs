#![no_main]
//! `cargo +nightly fuzz run certify`: see `remora_fuzz::certify`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz::certify::run(data));
