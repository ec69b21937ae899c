//! The layers of the request path, one module each, stacked in
//! [`super::stack`]. Most are a [`Step`]: a synchronous look at the call
//! that either passes it on or answers it; [`StepLayer`] makes a tower
//! `Layer` of one, whose future is the inner service's or a ready answer
//! (no allocation). The others ([`observe`], [`fault`], [`upstream`],
//! [`retry`], [`endpoint`]) wait on something and are services of their own.

pub mod action;
pub mod authz;
pub mod balance;
pub mod breaker;
pub mod endpoint;
pub mod fault;
pub mod message;
pub mod observe;
pub mod rate_limit;
pub mod retry;
pub mod route;
pub mod timeout;
pub mod upstream;

use super::call::{Answer, Call, Done, Ready};
use futures_util::future::{self, Either};
use std::convert::Infallible;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// A synchronous layer: looks at (and may change) the call, then passes it
/// on (`None`) or answers it (`Some`).
pub trait Step<B> {
    fn step(&self, call: &mut Call<B>) -> Option<Answer>;
}

/// A [`Step`] as a tower layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepLayer<T>(pub T);

impl<T: Clone, S> Layer<S> for StepLayer<T> {
    type Service = Stepped<T, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Stepped {
            step: self.0.clone(),
            inner,
        }
    }
}

/// A [`Step`] in front of the service below it.
#[derive(Clone, Debug)]
pub struct Stepped<T, S> {
    step: T,
    inner: S,
}

/// The future of a layer that may answer before the service below it.
pub type Answered<F> = Either<future::Ready<Ready>, F>;

/// Answers a call here.
pub fn answered<F>(done: Done) -> Answered<F> {
    Either::Left(future::ready(Ok(done)))
}

impl<T, S, B> Service<Call<B>> for Stepped<T, S>
where
    T: Step<B>,
    S: Service<Call<B>, Response = Done, Error = Infallible>,
{
    type Response = Done;
    type Error = Infallible;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call<B>) -> Self::Future {
        match self.step.step(&mut call) {
            None => Either::Right(self.inner.call(call)),
            Some(answer) => answered(call.answer(answer)),
        }
    }
}

#[cfg(test)]
mod tests;
