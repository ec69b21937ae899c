#![no_main]
//! `cargo +nightly fuzz run mesh`: see `remora_fuzz::mesh`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| remora_fuzz::mesh::run(data));
