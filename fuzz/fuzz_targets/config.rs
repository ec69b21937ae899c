#![no_main]
//! `cargo +nightly fuzz run config`: see `remora_fuzz::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz::config::run(data));
