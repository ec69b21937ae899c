//! Power of two choices: sample two distinct endpoints, keep the cheaper.

/// `cost(i)` is the load of endpoint `i`; needs `n >= 2`.
pub fn pick(n: usize, rng: &mut fastrand::Rng, cost: impl Fn(usize) -> f64) -> usize {
    let a = rng.usize(0..n);
    let mut b = rng.usize(0..n - 1);
    if b >= a {
        b += 1;
    }
    if cost(b) < cost(a) {
        b
    } else {
        a
    }
}
