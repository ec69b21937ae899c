use super::*;

const CONFIG: &str = "listeners: [{name: out, address: '127.0.0.1:1', routes: [{name: a, backends: [{name: b}]}]}]\nbackends: [{name: b, endpoints: [{address: '127.0.0.1:2'}]}]";

fn delta_line(base: &str, delta: &str) -> Vec<u8> {
    format!(r#"{{"version":"v2","base":"{base}","delta":{delta}}}"#).into_bytes()
}

#[tokio::test]
async fn after_the_cache_fallback_a_snapshot_is_swapped_over_the_cache() {
    let metrics = Metrics::new();
    let config = remora_api::parse_yaml(CONFIG).unwrap();
    let compiled = |c: &Config| {
        let materials = load_materials(c).unwrap();
        super::super::compile(c.clone(), materials, None, &metrics).unwrap()
    };
    let store: Store = Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::empty()));
    let settings = Settings {
        control_plane: crate::control_plane::Dial::plain(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            1,
        ))),
        workload: "w".into(),
        identity: None,
        cache: None,
        await_identity: false,
        admin_allow_remote_changes: false,
    };
    let (tx, mut rx) = mpsc::channel(1);
    let mut sub = Subscriber::new(settings, store.clone(), metrics.clone(), tx);
    // The grace period ended with nothing from the control plane.
    assert!(Subscriber::fall_back_to_cache(&store, &mut rx, compiled(&config)).is_none());
    // Its first snapshot arrives right after: applied over the cache
    // (it used to be checked against the empty store and NACKed as a
    // listener change).
    let mut next = config.clone();
    next.backends[0].endpoints[0].address.set_port(3);
    let msg = serde_json::to_vec(&SnapshotMsg {
        version: "v2".into(),
        config: next,
    })
    .unwrap();
    let verdict = sub.receive(Bytes::from(msg)).await.unwrap();
    assert_eq!(
        verdict,
        Ack::Ack {
            version: "v2".into()
        }
    );
    assert_eq!(sub.version(), Some("v2"));
    let served = store.load();
    assert_eq!(served.config.backends[0].endpoints[0].address.port(), 3);

    // A first snapshot that raced in is the app's to serve instead.
    let (tx, mut rx) = mpsc::channel(1);
    let (answer, _) = oneshot::channel();
    tx.send((compiled(&config), answer)).await.unwrap();
    let raced = Subscriber::fall_back_to_cache(&store, &mut rx, compiled(&config));
    assert!(raced.is_some());
    assert!(tx.is_closed());
}

#[test]
fn a_delta_applies_to_the_config_served_and_is_validated_whole() {
    let config = remora_api::parse_yaml(CONFIG).unwrap();
    let moved = r#"{"backends":[{"name":"b","endpoints":[{"address":"127.0.0.1:3"}]}]}"#;
    let d = decode_against(&delta_line("v1", moved), Some("v1"), &config).unwrap();
    assert_eq!((d.version.as_str(), d.delta), ("v2", Some(1)));
    let next = d.config.unwrap();
    assert_eq!(next.backends[0].endpoints[0].address.port(), 3);
    assert_eq!(next.listeners, config.listeners);

    // From a version this proxy does not serve: refused, so the control
    // plane sends the whole snapshot.
    let d = decode_against(&delta_line("v0", moved), Some("v1"), &config).unwrap();
    assert_eq!(
        d.config.unwrap_err(),
        ["a delta from version v0, but this proxy serves v1"]
    );
    let d = decode_against(&delta_line("v0", moved), None, &config).unwrap();
    assert!(d.config.unwrap_err()[0].ends_with("serves nothing yet"));

    // The result is validated whole: a route left without its backend.
    let gone = r#"{"remove_backends":["b"]}"#;
    let d = decode_against(&delta_line("v1", gone), Some("v1"), &config).unwrap();
    let errors = d.config.unwrap_err();
    assert!(
        errors[0].contains("listeners[0].routes[0].backends[0]"),
        "{errors:?}"
    );

    // Neither a snapshot nor a delta: NACKed, the stream goes on.
    let d = decode_against(br#"{"version":"v3"}"#, Some("v1"), &config).unwrap();
    assert!(d.config.unwrap_err()[0].contains("either `config`"));
    // Not a message at all: the subscription ends.
    assert!(decode_against(b"{", Some("v1"), &config).is_err());
}
