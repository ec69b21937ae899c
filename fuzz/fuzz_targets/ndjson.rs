#![no_main]
//! `cargo +nightly fuzz run ndjson`: see `remora_fuzz::ndjson`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz::ndjson::run(data));
