//! Tower's own pieces beside ours, in one run (issue 12): the P2C balancer
//! with a peak-EWMA load, the retry budget, the concurrency limit.
//!
//! Run: `cargo bench -p remora-proxy --bench tower_pieces -- --warm-up-time 1 --measurement-time 3`
//!
//! Each pair does the same work per iteration:
//!
//! * `balance/*/{3,100}`: choose an endpoint by P2C over peak-EWMA costs,
//!   start a request on it and record its completion (latency sample). Tower:
//!   `Balance<ServiceList<PeakEwma<_>>>`, `poll_ready` + `call` + the response
//!   future polled to its end (the `Handle` drop updates the estimate). Ours:
//!   `Backend::pick` + `InFlight::start` + `Load::observe` + drop.
//! * `load/*`: one endpoint's cost read (`tower::load::Load::load` vs
//!   `Load::peak_ewma_cost`).
//! * `budget/*/{deposit,withdraw,exhausted}`: `TpsBudget` vs our
//!   `RetryBudget`, both reading the clock themselves (ours through
//!   `now_ns()`, as the request path calls it). `deposit/2-threads`: two
//!   threads depositing into one budget at once (ns per deposit, wall time).
//! * `limit/*/{acquire+release,at-limit}`: `ConcurrencyLimit` `poll_ready` +
//!   `call` + poll + drop vs our `Breaker::acquire` + drop. Tower's waits at
//!   the limit (backpressure), ours fails fast (a 503), so `at-limit` is a
//!   `Pending` poll for tower and a refusal for ours.
//!
//! No I/O: inner services answer at once; our endpoints are never dialled.
//! Futures are polled by hand with a no-op waker (no runtime in the loop).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use remora_api as api;
use remora_proxy::balance::{now_ns, Backend, Breaker, Endpoint, InFlight, Overflow};
use remora_proxy::http::client::{EndpointClient, Transport};
use remora_proxy::http::retry::RetryBudget;
use remora_proxy::metrics::Metrics;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::limit::ConcurrencyLimit;
use tower::load::{CompleteOnResponse, Load, PeakEwma};
use tower::retry::budget::{Budget, TpsBudget};
use tower::Service;

const SIZES: [usize; 2] = [3, 100];
/// As ours (`balance/load.rs`): 30 ms default, 10 s decay.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
const DECAY_NS: f64 = 10e9;

/// An endpoint that answers at once.
#[derive(Clone)]
struct Instant200;

impl Service<()> for Instant200 {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: ()) -> Self::Future {
        ready(Ok(()))
    }
}

fn cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// One request through a tower service: ready, call, polled to its end.
fn one_call<S: Service<()>>(svc: &mut S, cx: &mut Context<'_>) -> bool {
    if !matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let fut = pin!(svc.call(()));
    matches!(fut.poll(cx), Poll::Ready(Ok(_)))
}

fn peak_ewma() -> PeakEwma<Instant200> {
    PeakEwma::new(
        Instant200,
        DEFAULT_RTT,
        DECAY_NS,
        CompleteOnResponse::default(),
    )
}

fn our_backend(n: usize) -> Backend {
    let metrics = Metrics::new();
    let transport = Transport::plain();
    let eps = (0..n)
        .map(|i| {
            let addr: SocketAddr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
            let client = EndpointClient::new(addr, transport.clone(), metrics.upstream("b"));
            (Arc::new(Endpoint::new(addr, client)), 1)
        })
        .collect();
    Backend::new(
        "b".into(),
        eps,
        &api::Balancer::PeakEwma,
        api::UpstreamProtocol::Auto,
    )
}

fn bench_balance(c: &mut Criterion) {
    let mut g = c.benchmark_group("balance");
    let headers = http::HeaderMap::new();
    for n in SIZES {
        let mut tower = Balance::new(ServiceList::new((0..n).map(|_| peak_ewma())));
        let mut cx = cx();
        assert!(one_call(&mut tower, &mut cx), "tower's balancer is ready");
        g.bench_function(BenchmarkId::new("tower-p2c-peak-ewma", n), |b| {
            b.iter(|| black_box(one_call(&mut tower, &mut cx)))
        });
        let ours = our_backend(n);
        let mut rng = fastrand::Rng::with_seed(7);
        g.bench_function(BenchmarkId::new("ours-p2c-peak-ewma", n), |b| {
            b.iter(|| {
                let started = Instant::now();
                let ep = ours.pick(black_box(&headers), &mut rng).expect("endpoints");
                let in_flight = InFlight::start(ep, None);
                ep.load.observe(started.elapsed());
                drop(in_flight);
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("load");
    let tower = peak_ewma();
    g.bench_function("tower-peak-ewma-cost", |b| {
        b.iter(|| black_box(black_box(&tower).load()))
    });
    let ours = remora_proxy::balance::Load::new();
    g.bench_function("ours-peak-ewma-cost", |b| {
        b.iter(|| black_box(black_box(&ours).peak_ewma_cost(1)))
    });
    g.finish();
}

fn bench_budget(c: &mut Criterion) {
    let mut g = c.benchmark_group("budget");
    // The same policy both ways: 10 s window, 10 retries/s reserve, 20%.
    let tower = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let ours = Arc::new(RetryBudget::new(&api::RetryBudget {
        ratio: 0.2,
        min_per_second: 10,
        window: api::Duration::from_secs(10),
    }));
    g.bench_function("tower-tps/deposit", |b| b.iter(|| tower.deposit()));
    g.bench_function("ours/deposit", |b| b.iter(|| ours.deposit(now_ns())));
    // Four deposits a withdrawal: a budget that never runs out at 20%.
    g.bench_function("tower-tps/withdraw", |b| {
        b.iter(|| {
            (0..4).for_each(|_| tower.deposit());
            black_box(tower.withdraw())
        })
    });
    g.bench_function("ours/withdraw", |b| {
        b.iter(|| {
            (0..4).for_each(|_| ours.deposit(now_ns()));
            black_box(ours.withdraw(now_ns()))
        })
    });
    let spent_tower = TpsBudget::new(Duration::from_secs(10), 0, 0.2);
    let spent_ours = RetryBudget::new(&api::RetryBudget {
        ratio: 0.2,
        min_per_second: 0,
        window: api::Duration::from_secs(10),
    });
    g.bench_function("tower-tps/exhausted", |b| {
        b.iter(|| black_box(spent_tower.withdraw()))
    });
    g.bench_function("ours/exhausted", |b| {
        b.iter(|| black_box(spent_ours.withdraw(now_ns())))
    });
    let two_threads = |deposit: Arc<dyn Fn() + Send + Sync>| {
        move |iters: u64| {
            let start = Instant::now();
            let t = {
                let deposit = deposit.clone();
                std::thread::spawn(move || (0..iters).for_each(|_| deposit()))
            };
            (0..iters).for_each(|_| deposit());
            t.join().expect("depositing thread");
            start.elapsed() / 2
        }
    };
    let t = tower.clone();
    let f = two_threads(Arc::new(move || t.deposit()));
    g.bench_function("tower-tps/deposit/2-threads", |b| b.iter_custom(&f));
    let o = ours.clone();
    let f = two_threads(Arc::new(move || o.deposit(now_ns())));
    g.bench_function("ours/deposit/2-threads", |b| b.iter_custom(&f));
    g.finish();
}

fn bench_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit");
    let mut cx = cx();
    let mut tower = ConcurrencyLimit::new(Instant200, 100);
    g.bench_function("tower-concurrency-limit/acquire+release", |b| {
        b.iter(|| black_box(one_call(&mut tower, &mut cx)))
    });
    let ours = Arc::new(Breaker::default());
    g.bench_function("ours-breaker/acquire+release", |b| {
        b.iter(|| black_box(ours.acquire(Overflow::Requests, 100).is_ok()))
    });
    // At the limit: one slot, held.
    let mut full = ConcurrencyLimit::new(Instant200, 1);
    let mut holder = full.clone();
    assert!(holder.poll_ready(&mut cx).is_ready());
    let _held = holder.call(());
    g.bench_function("tower-concurrency-limit/at-limit", |b| {
        b.iter(|| black_box(full.poll_ready(&mut cx).is_pending()))
    });
    let _slot = ours.acquire(Overflow::Requests, 1).expect("a free slot");
    g.bench_function("ours-breaker/at-limit", |b| {
        b.iter(|| black_box(ours.acquire(Overflow::Requests, 1).is_err()))
    });
    g.finish();
}

criterion_group!(benches, bench_balance, bench_budget, bench_limit);
criterion_main!(benches);
