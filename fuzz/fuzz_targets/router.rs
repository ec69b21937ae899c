#![no_main]
//! `cargo +nightly fuzz run router`: see `remora_fuzz::router`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz::router::run(data));
