//! `detect`: protocol detection (`remora_proxy::detect`) over a
//! connection's first bytes, arbitrary ones.
//!
//! Invariants: no panic; a decision never changes with more bytes (once
//! `classify` answers for a prefix, it answers the same for every longer
//! one); `guess` agrees with `classify` where `classify` answers; `read`
//! over the bytes split into arbitrary reads decides as `classify`/`guess`
//! do on what it read, reads at most `MAX_BYTES`, and `Rewind` gives back
//! every byte, in order, before the rest of the stream.

use remora_proxy::detect::{classify, guess, read, Protocol, Rewind, MAX_BYTES};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

pub fn run(data: &[u8]) {
    let data = &data[..data.len().min(MAX_BYTES + 64)];
    let mut decided: Option<Protocol> = None;
    for end in 0..=data.len() {
        let prefix = &data[..end];
        let now = classify(prefix);
        if let Some(d) = decided {
            assert_eq!(now, Some(d), "classify changed its mind at {end} bytes");
        }
        decided = now;
        let guessed = guess(prefix);
        if let Some(p) = now {
            assert_eq!(guessed, p, "guess disagrees with classify at {end} bytes");
        }
    }
    read_and_rewind(data);
}

/// A stream that returns `data` in reads of the sizes `chunks` cycles
/// through, then ends.
struct Chunks<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    n: usize,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let size = this.sizes[this.n % this.sizes.len()];
        this.n += 1;
        let k = size.min(this.data.len()).min(buf.remaining());
        buf.put_slice(&this.data[..k]);
        this.data = &this.data[k..];
        Poll::Ready(Ok(()))
    }
}

fn read_and_rewind(data: &[u8]) {
    // Read sizes from the first byte: 1..=8 bytes, or whole.
    let first = data.first().copied().unwrap_or(0);
    let sizes = match first % 4 {
        0 => vec![usize::MAX],
        k => vec![1 + (first as usize >> 2) % 8, 1 + k as usize * 3],
    };
    let mut stream = Chunks { data, sizes, n: 0 };
    crate::block_on(async {
        let (detection, seen) = read(&mut stream, 80, Duration::from_secs(5))
            .await
            .expect("reading a slice does not fail");
        assert!(seen.len() <= MAX_BYTES, "read {} bytes", seen.len());
        assert_eq!(&seen[..], &data[..seen.len()], "read other bytes");
        let want = classify(&seen).unwrap_or_else(|| guess(&seen));
        assert_eq!(detection.protocol, want, "read decided otherwise");
        let mut all = Vec::new();
        Rewind::new(seen, stream)
            .read_to_end(&mut all)
            .await
            .expect("reading a slice does not fail");
        assert_eq!(all, data, "rewound bytes differ");
    });
}
