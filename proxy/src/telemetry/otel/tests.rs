//! The tracer's decisions on the request path: which requests are traced,
//! and what `traceparent` goes on.

use super::*;
use http::Request;

fn tracer(sampling: f64) -> (Arc<Tracer>, Arc<Metrics>) {
    let metrics = Metrics::new();
    let config: remora_api::Tracing =
        serde_yaml_ng::from_str(&format!("collector: 127.0.0.1:1\nsampling: {sampling}")).unwrap();
    (
        Tracer::carry(Some(&config), None, &metrics).unwrap(),
        metrics,
    )
}

fn request(traceparent: Option<&str>) -> Request<()> {
    let mut req = Request::get("/items").header(HOST, "shop");
    if let Some(t) = traceparent {
        req = req.header("traceparent", t).header("tracestate", "v=1");
    }
    req.body(()).unwrap()
}

fn parent_of(req: &Request<()>) -> Parent {
    context::parse(req.headers().get(&TRACEPARENT).unwrap()).unwrap()
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_sampled_parent_is_continued_even_at_ratio_0() {
    let (t, _) = tracer(0.0);
    let mut req = request(Some(PARENT));
    let traced = t.start(&mut req).expect("traced");
    let sent = parent_of(&req);
    assert_eq!(
        context::hex(&sent.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(sent.span_id, traced.0.span_id);
    assert!(sent.sampled);
    assert_eq!(
        traced.0.parent.map(|p| context::hex(&p)).as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert_eq!(req.headers()["tracestate"], "v=1");
    // An attempt names its own span, a child of the server span.
    let attempt = traced.attempt(&mut req, 0);
    let upstream = parent_of(&req);
    assert_eq!(upstream.trace_id, sent.trace_id);
    assert_eq!(upstream.span_id, attempt.span_id);
    assert_ne!(upstream.span_id, sent.span_id);
}

#[test]
fn an_unsampled_parent_passes_through_untouched() {
    let (t, _) = tracer(1.0);
    let unsampled = PARENT.replace("-01", "-00");
    let mut req = request(Some(&unsampled));
    assert!(t.start(&mut req).is_none());
    assert_eq!(req.headers()["traceparent"], unsampled.as_str());
}

#[test]
fn a_new_trace_follows_the_ratio_and_always_goes_on() {
    let (always, _) = tracer(1.0);
    let mut req = request(None);
    assert!(always.start(&mut req).is_some());
    assert!(parent_of(&req).sampled);

    let (never, _) = tracer(0.0);
    let mut req = request(None);
    assert!(never.start(&mut req).is_none());
    assert!(
        !parent_of(&req).sampled,
        "the next hops learn it is not sampled"
    );

    let (half, _) = tracer(0.5);
    let sampled = (0..2000)
        .filter(|_| half.start(&mut request(None)).is_some())
        .count();
    assert!((700..1300).contains(&sampled), "{sampled} of 2000 at 0.5");
}

#[test]
fn an_invalid_traceparent_starts_a_new_trace_without_its_tracestate() {
    let (t, _) = tracer(1.0);
    let mut req = request(Some("00-zz-00f067aa0ba902b7-01"));
    let traced = t.start(&mut req).expect("traced");
    assert_eq!(traced.0.parent, None);
    assert!(req.headers().get("tracestate").is_none());
}

#[test]
fn spans_nobody_can_take_are_dropped_and_counted() {
    // No runtime: no exporter, so nothing takes the spans.
    let metrics = Metrics::new();
    let config: remora_api::Tracing =
        serde_yaml_ng::from_str("collector: 127.0.0.1:1\nqueue: 1\nbatch_size: 1").unwrap();
    let t = Tracer::carry(Some(&config), None, &metrics).unwrap();
    for _ in 0..3 {
        let mut req = request(None);
        let traced = t.start(&mut req).unwrap();
        traced.finish(End {
            status: StatusCode::OK,
            error: "",
            listener: &Arc::from("l"),
            route: None,
            backend: None,
        });
    }
    let dropped = metrics.trace_spans.with_label_values(&["dropped"]).get();
    assert_eq!(dropped, 3);
}

#[test]
fn an_unchanged_config_keeps_its_tracer() {
    let (t, metrics) = tracer(1.0);
    let same = Tracer::carry(Some(&t.config), Some(&t), &metrics).unwrap();
    assert!(Arc::ptr_eq(&t, &same));
    let mut other = t.config.clone();
    other.sampling = 0.5;
    let new = Tracer::carry(Some(&other), Some(&t), &metrics).unwrap();
    assert!(!Arc::ptr_eq(&t, &new));
    assert!(Tracer::carry(None, Some(&t), &metrics).is_none());
}
