//! The endpoints one request has already tried, so that its retries go
//! elsewhere when another endpoint is available. Kept inline (no allocation,
//! not even on a retry): a request rarely makes more than a few attempts.

/// How many endpoint indices are remembered; later ones are not (a retry
/// past that may go back to one of them).
const CAP: usize = 8;

/// A small set of endpoint indices of one backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tried {
    idx: [u32; CAP],
    len: u8,
}

impl Tried {
    /// No endpoint tried yet: what a first attempt passes.
    pub const NONE: Tried = Tried {
        idx: [0; CAP],
        len: 0,
    };

    pub fn insert(&mut self, i: usize) {
        if self.contains(i) || usize::from(self.len) == CAP {
            return;
        }
        self.idx[usize::from(self.len)] = i as u32;
        self.len += 1;
    }

    pub fn contains(&self, i: usize) -> bool {
        self.idx[..usize::from(self.len)].contains(&(i as u32))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
