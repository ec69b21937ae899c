//! The fuzz smoke test: every file of `corpus/<target>/` through its target
//! on stable, so a crash found once (and added to the corpus) stays fixed.

use super::TARGETS;
use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, run) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no corpus files", dir.display());
        for f in &files {
            let data = std::fs::read(f).unwrap();
            // A panic names the file that caused it.
            let caught = std::panic::catch_unwind(|| run(&data));
            assert!(caught.is_ok(), "{name}: {} panics", f.display());
        }
        println!("{name}: {} corpus files pass", files.len());
    }
}
