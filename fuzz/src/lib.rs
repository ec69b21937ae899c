//! Remora's fuzz targets, each a plain function `run(&[u8])` that must
//! never panic (nor loop) on any input, and that checks what the code under
//! test promises (see each module). `fuzz_targets/*.rs` hand them to
//! libFuzzer (`cargo +nightly fuzz run <target>`); the unit test below
//! replays every committed corpus file through the same functions on stable,
//! which is the fuzz smoke test CI runs. See docs/fuzzing.md.

pub mod certify;
pub mod config;
pub mod delta;
pub mod detect;
pub mod mesh;
pub mod ndjson;
pub mod router;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/` file and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("certify", certify::run),
    ("config", config::run),
    ("delta", delta::run),
    ("detect", detect::run),
    ("mesh", mesh::run),
    ("ndjson", ndjson::run),
    ("router", router::run),
];

/// The text of an input, when it is UTF-8 (the YAML and JSON parsers take
/// `&str`; other bytes are not worth a run).
pub(crate) fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Runs `f` to its end on one shared current-thread runtime (with timers).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
    .block_on(f)
}

#[cfg(test)]
mod replay;
