//! Weighted round robin over a precomputed, interleaved schedule.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Endpoint indices in turn, each `weight` times per round (weights divided
/// by their gcd), interleaved as smooth weighted round robin does.
pub fn schedule(weights: &[u32]) -> Box<[u32]> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|w| (*w / g) as i64).collect();
    let total: i64 = w.iter().sum();
    // Cap the round so a large weight sum cannot blow up memory.
    let len = total.clamp(0, 10_000) as usize;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        for (c, w) in current.iter_mut().zip(&w) {
            *c += w;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .expect("non-empty");
        current[best] -= total;
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

pub fn pick(schedule: &[u32], next: &AtomicUsize) -> usize {
    if schedule.is_empty() {
        return 0;
    }
    schedule[next.fetch_add(1, Relaxed) % schedule.len()] as usize
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
