#![no_main]
//! `cargo +nightly fuzz run delta`: see `remora_fuzz::delta`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz::delta::run(data));
