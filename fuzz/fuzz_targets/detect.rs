#![no_main]
//! `cargo +nightly fuzz run detect`: see `remora_fuzz::detect`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz::detect::run(data));
