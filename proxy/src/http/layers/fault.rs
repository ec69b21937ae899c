//! Fault injection on the route: a delay before the request goes on, an
//! abort that answers with the configured status instead, or both. A
//! delayed request waits in a boxed future (the only path that allocates
//! here, and it sleeps anyway); the others cost one branch.

use super::{answered, Answered};
use crate::http::call::{Call, Done, Ready};
use crate::http::error::ProxyError;
use futures_util::future::{BoxFuture, Either};
use std::convert::Infallible;
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[derive(Clone, Copy, Debug, Default)]
pub struct FaultLayer;

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Fault<S> {
        Fault { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Fault<S> {
    inner: S,
}

impl<S> Service<Call> for Fault<S>
where
    S: Service<Call, Response = Done, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Done;
    type Error = Infallible;
    type Future = Answered<Either<S::Future, BoxFuture<'static, Ready>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        let cx = &mut call.cx;
        let Some(fault) = cx.view.route().and_then(|r| r.fault.as_ref()) else {
            return Either::Right(Either::Left(self.inner.call(call)));
        };
        let injection = fault.decide(&mut cx.rng);
        let abort = injection.abort.map(ProxyError::FaultInjected);
        let Some(delay) = injection.delay else {
            return match abort {
                Some(e) => answered(call.answer(Err(e))),
                None => Either::Right(Either::Left(self.inner.call(call))),
            };
        };
        // The service polled ready goes into the future; a clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Either::Right(Box::pin(async move {
            tokio::time::sleep(delay).await;
            call.cx.delayed = true;
            match abort {
                Some(e) => Ok(call.answer(Err(e))),
                None => inner.call(call).await,
            }
        })))
    }
}
