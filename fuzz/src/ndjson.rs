//! `ndjson`: the snapshot stream's line framing (`remora_control_plane::
//! ndjson::Lines`) over a body whose frames split the bytes anywhere.
//!
//! Input: byte 0 sets the longest line accepted (1..=256), byte 1 the frame
//! sizes, the rest is the body. Invariants: no panic; the lines read are
//! exactly those of splitting the whole body at `\n` (blank lines skipped, a
//! last line without `\n` kept), however it is framed, up to the first line
//! longer than the maximum, which is an error (`LineTooLong`), and no line
//! returned is longer than the maximum.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use remora_control_plane::ndjson::Lines;
use remora_control_plane::Error;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A body of the given frames.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// What reading `body` must give: its lines, and whether a too-long one
/// ends them.
fn expected(body: &[u8], max: usize) -> (Vec<&[u8]>, bool) {
    let mut lines = Vec::new();
    let mut segments: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if body.ends_with(b"\n") || body.is_empty() {
        segments.pop();
    }
    for s in segments {
        if s.len() > max {
            return (lines, true);
        }
        if !s.iter().all(u8::is_ascii_whitespace) {
            lines.push(s);
        }
    }
    (lines, false)
}

pub fn run(data: &[u8]) {
    let [m, f, body @ ..] = data else {
        return;
    };
    let max = 1 + *m as usize;
    let sizes = match f % 4 {
        0 => vec![body.len().max(1)],
        k => vec![1 + (*f as usize >> 2) % 40, 1 + k as usize * 5],
    };
    let mut frames = VecDeque::new();
    let mut rest = body;
    for i in 0.. {
        if rest.is_empty() {
            break;
        }
        let (frame, tail) = rest.split_at(sizes[i % sizes.len()].min(rest.len()));
        frames.push_back(Bytes::copy_from_slice(frame));
        rest = tail;
    }
    let (want, too_long) = expected(body, max);
    let mut lines = Lines::with_max(Frames(frames), max);
    let mut got = Vec::new();
    let ended = crate::block_on(async {
        loop {
            match lines.next().await {
                Ok(Some(line)) => got.push(line),
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    for l in &got {
        assert!(l.len() <= max, "a line of {} bytes (max {max})", l.len());
    }
    let got: Vec<&[u8]> = got.iter().map(|b| &b[..]).collect();
    assert_eq!(got, want, "other lines than the body's");
    match ended {
        Ok(()) => assert!(!too_long, "a line longer than {max} was not refused"),
        Err(Error::LineTooLong(n)) => {
            assert_eq!(n, max);
            assert!(too_long, "refused, but no line is longer than {max}");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}
