//! Tests for test-support itself: each helper against the others, and the
//! proxy harness against the `fake-proxy` stand-in binary.

mod client;
mod faults;
mod proxy;
mod tls;
mod upstream;
