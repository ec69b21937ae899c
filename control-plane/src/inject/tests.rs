//! Table tests of the decision and of the annotations.

use super::annotations::{port_list, Overrides};
use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn template(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodTemplateSpec {
    let map = |kv: &[(&str, &str)]| {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: map(labels),
            annotations: map(annotations),
            ..Default::default()
        }),
        spec: Some(
            serde_json::from_value(serde_json::json!({"containers": [{"name": "app"}]})).unwrap(),
        ),
    }
}

/// (name, template, namespace labels, config, expected decision)
type Case<'a> = (
    &'a str,
    PodTemplateSpec,
    &'a BTreeMap<String, String>,
    &'a InjectConfig,
    Option<Skip>,
);

#[test]
fn decisions() {
    let on = BTreeMap::from([(INJECT.to_string(), "enabled".to_string())]);
    let off = BTreeMap::new();
    let cfg = InjectConfig::default();
    let forced = InjectConfig {
        force: true,
        ..InjectConfig::default()
    };
    let e = "enabled";
    let d = "disabled";
    let cases: Vec<Case> = vec![
        ("namespace opts in", template(&[], &[]), &on, &cfg, None),
        (
            "nothing opts in",
            template(&[], &[]),
            &off,
            &cfg,
            Some(Skip::NotOptedIn),
        ),
        ("force", template(&[], &[]), &off, &forced, None),
        ("pod label", template(&[(INJECT, e)], &[]), &off, &cfg, None),
        (
            "pod annotation",
            template(&[], &[(INJECT, e)]),
            &off,
            &cfg,
            None,
        ),
        (
            "opt-out wins over namespace",
            template(&[], &[(INJECT, d)]),
            &on,
            &cfg,
            Some(Skip::OptedOut),
        ),
        (
            "opt-out label wins over force",
            template(&[(INJECT, d)], &[]),
            &off,
            &forced,
            Some(Skip::OptedOut),
        ),
        (
            "annotation wins over label",
            template(&[(INJECT, d)], &[(INJECT, e)]),
            &off,
            &cfg,
            None,
        ),
        (
            "already injected",
            template(&[], &[(INJECTED, "0.1.0")]),
            &on,
            &cfg,
            Some(Skip::AlreadyInjected),
        ),
    ];
    for (name, t, ns, cfg, want) in cases {
        assert_eq!(decide(&t, ns, cfg), Ok(want), "{name}");
    }
    let mut host = template(&[], &[]);
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(decide(&host, &on, &cfg), Ok(Some(Skip::HostNetwork)));
    let bad = template(&[], &[(INJECT, "yes")]);
    let err = decide(&bad, &on, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("remora.io/inject") && err.contains("`yes`"),
        "{err}"
    );
}

#[test]
fn port_lists() {
    let n = "remora.io/skip-inbound-ports";
    assert_eq!(port_list(n, "8080").unwrap(), "8080");
    assert_eq!(port_list(n, " 25, 9000-9100 ").unwrap(), "25,9000-9100");
    for bad in ["", "0", "70000", "9100-9000", "http", "1,,2"] {
        let e = port_list(n, bad).unwrap_err().to_string();
        assert!(
            e.starts_with("annotation remora.io/skip-inbound-ports"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn overrides() {
    let cfg = InjectConfig::default();
    let ann = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let o = Overrides::parse(&ann(&[]), &cfg).unwrap();
    assert_eq!(o.resources, cfg.resources);
    assert_eq!(o.mode, SidecarMode::Native);
    let o = Overrides::parse(
        &ann(&[
            (annotations::CPU_LIMIT, "1"),
            (annotations::MEMORY_REQUEST, "128Mi"),
            (annotations::LOG_LEVEL, "debug,hyper=warn"),
            (annotations::SIDECAR_MODE, "container"),
        ]),
        &cfg,
    )
    .unwrap();
    assert_eq!(o.resources.cpu_limit.as_deref(), Some("1"));
    assert_eq!(o.resources.memory_request.as_deref(), Some("128Mi"));
    assert_eq!(o.resources.cpu_request, cfg.resources.cpu_request);
    assert_eq!(o.log_level, "debug,hyper=warn");
    assert_eq!(o.mode, SidecarMode::Container);
    for (name, value) in [
        (annotations::CPU_REQUEST, "lots"),
        (annotations::MEMORY_LIMIT, "64MB"),
        (annotations::SIDECAR_MODE, "sidecar"),
        (annotations::LOG_LEVEL, "=="),
        (annotations::OPAQUE_PORTS, "mysql"),
    ] {
        let e = Overrides::parse(&ann(&[(name, value)]), &cfg).unwrap_err();
        assert!(e.to_string().contains(name), "{name}={value}: {e}");
    }
}

#[test]
fn literals_deserialize_and_native_order() {
    let cfg = InjectConfig::default();
    let t = template(&[], &[]);
    let Outcome::Injected(out) = inject_template(
        &t,
        &BTreeMap::new(),
        &InjectConfig {
            force: true,
            ..cfg.clone()
        },
    )
    .unwrap() else {
        panic!("not injected");
    };
    let spec = out.spec.unwrap();
    let inits: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, [INIT_CONTAINER, PROXY_CONTAINER]);
    assert_eq!(
        spec.init_containers.as_ref().unwrap()[1]
            .restart_policy
            .as_deref(),
        Some("Always")
    );
    assert_eq!(spec.containers.len(), 1);
    let caps = spec.init_containers.as_ref().unwrap()[0]
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .clone()
        .unwrap();
    assert_eq!(caps.add.unwrap(), ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(caps.drop.unwrap(), ["ALL"]);
}

/// The namespace opt-in is the webhook's: labels from its namespace source.
#[tokio::test]
async fn webhook_reads_the_namespace_labels() {
    use super::webhook::{Injector, Namespaces};
    let injector = Injector {
        config: InjectConfig::default(),
        namespaces: Namespaces::Fixed(BTreeMap::from([(
            "meshed".to_string(),
            BTreeMap::from([(INJECT.to_string(), "enabled".to_string())]),
        )])),
        metrics: crate::metrics::Metrics::new(),
    };
    let review = |ns: &str| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "namespace": ns, "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "userInfo": {},
                "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}},
            }
        }))
        .unwrap()
    };
    let answer = |body: Vec<u8>| -> serde_json::Value { serde_json::from_slice(&body).unwrap() };
    let meshed = answer(injector.review(&review("meshed")).await.unwrap());
    assert_eq!(meshed["response"]["allowed"], true);
    assert!(meshed["response"]["patch"].is_string(), "{meshed}");
    let plain = answer(injector.review(&review("plain")).await.unwrap());
    assert_eq!(plain["response"]["allowed"], true);
    assert!(plain["response"].get("patch").is_none(), "{plain}");
    let m = injector.metrics.encode();
    assert!(
        m.contains("remora_cp_injections_total{outcome=\"injected\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("remora_cp_injections_total{outcome=\"not_opted_in\"} 1"),
        "{m}"
    );
}

#[test]
fn trust_roots_inline_need_no_configmap() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let inject = |trust_roots: TrustRoots| {
        let cfg = InjectConfig {
            force: true,
            trust_roots,
            ..InjectConfig::default()
        };
        let Outcome::Injected(out) =
            inject_template(&template(&[], &[]), &BTreeMap::new(), &cfg).unwrap()
        else {
            panic!("not injected");
        };
        let spec = out.spec.unwrap();
        let proxy = spec.init_containers.unwrap()[1].clone();
        let env: BTreeMap<String, Option<String>> = proxy
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        let volumes: Vec<String> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
        (proxy.args.unwrap(), env, volumes)
    };

    let (args, env, volumes) = inject(TrustRoots::Pem(pem.into()));
    assert!(!args.iter().any(|a| a == "--control-plane-ca"), "{args:?}");
    assert_eq!(env["REMORA_CONTROL_PLANE_CA_PEM"].as_deref(), Some(pem));
    assert!(
        !volumes.iter().any(|v| v == "remora-trust-roots"),
        "{volumes:?}"
    );

    let (args, env, volumes) = inject(TrustRoots::ConfigMap("roots".into()));
    let at = args.iter().position(|a| a == "--control-plane-ca").unwrap();
    assert_eq!(args[at + 1], "/var/run/remora/trust/ca.crt");
    assert!(!env.contains_key("REMORA_CONTROL_PLANE_CA_PEM"));
    assert!(
        volumes.iter().any(|v| v == "remora-trust-roots"),
        "{volumes:?}"
    );
}
