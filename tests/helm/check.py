#!/usr/bin/env python3
"""Assertions on the chart's rendered objects (tests/helm/run.sh calls it).

    check.py RENDERED.yaml CASE [OUT_DIR]
    check.py --secrets same|new FIRST.yaml SECOND.yaml

CASE is the value set (default, byo-ca, replicas-3, failure-policy-fail,
custom-images): the invariants every rendering must keep are checked, then
what that value set changes. With OUT_DIR, every Secret key and the
webhook's caBundle are written there as files (SECRET.KEY), for openssl.
With --secrets, the certificates of two renderings (the three Secrets,
the webhook's caBundle, the trust roots) must be all the same (an upgrade
that found the first release's Secrets) or all different (a fresh install).
Exits 1 with one line per failed assertion.
"""
import base64
import os
import sys

import yaml

NS = "remora-system"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


# Objects of the release namespace and cluster-scoped ones, by (kind, name);
# those of other namespaces (the copies of remora-trust-roots) by
# (kind, name, namespace).
def load(path):
    objs = {}
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                m = doc["metadata"]
                key = (doc["kind"], m["name"])
                if m.get("namespace", NS) != NS:
                    key += (m["namespace"],)
                check(key not in objs, f"{key} rendered twice")
                objs[key] = doc
    return objs


def container(objs):
    return objs[("Deployment", "remora-control-plane")]["spec"]["template"]["spec"]["containers"][0]


def arg(c, flag):
    """The value of --flag=VALUE in the container's args, else None."""
    for a in c["args"]:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


# The least-privilege set of K8S-DESIGN.md, exactly.
RBAC = {
    ("", "services"): ["get", "list", "watch"],
    ("", "pods"): ["get", "list", "watch"],
    ("", "namespaces"): ["get", "list", "watch"],
    ("discovery.k8s.io", "endpointslices"): ["get", "list", "watch"],
    ("gateway.networking.k8s.io", "httproutes"): ["get", "list", "watch"],
    ("gateway.networking.k8s.io", "grpcroutes"): ["get", "list", "watch"],
    ("policy.remora.io", "servicepolicies"): ["get", "list", "watch"],
    ("policy.remora.io", "authorizationpolicies"): ["get", "list", "watch"],
    ("authentication.k8s.io", "tokenreviews"): ["create"],
}


def crd(name, o):
    """A CRD of charts/remora/crds (generated elsewhere): policy.remora.io,
    namespaced, each served version with a structural schema."""
    spec = o["spec"]
    check(spec["group"] == "policy.remora.io", f"CRD {name}: group {spec['group']}")
    check(name == f"{spec['names']['plural']}.{spec['group']}", f"CRD {name}: name is not plural.group")
    check(spec["scope"] == "Namespaced", f"CRD {name}: scope {spec['scope']}")
    for v in spec["versions"]:
        schema = v.get("schema", {}).get("openAPIV3Schema", {})
        check(schema.get("type") == "object", f"CRD {name} {v['name']}: no structural openAPIV3Schema")


def common(objs):
    role = objs[("ClusterRole", "remora-control-plane")]
    granted = {}
    for rule in role["rules"]:
        check(set(rule) == {"apiGroups", "resources", "verbs"},
              f"ClusterRole rule has more than groups/resources/verbs: {rule}")
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                check((g, r) not in granted, f"ClusterRole grants {g}/{r} twice")
                granted[(g, r)] = sorted(rule["verbs"])
    want = {k: sorted(v) for k, v in RBAC.items()}
    check(granted == want, f"ClusterRole is not the least-privilege set: {granted}")
    kinds = {key[0] for key in objs}
    check(not kinds & {"Role", "RoleBinding"}, "unexpected namespaced RBAC")
    binding = objs[("ClusterRoleBinding", "remora-control-plane")]
    check(binding["subjects"] == [{"kind": "ServiceAccount", "name": "remora-control-plane", "namespace": NS}],
          f"ClusterRoleBinding subjects: {binding['subjects']}")
    check(("ServiceAccount", "remora-control-plane") in objs, "no ServiceAccount")

    dep = objs[("Deployment", "remora-control-plane")]
    pod = dep["spec"]["template"]["spec"]
    c = container(objs)
    check(pod["serviceAccountName"] == "remora-control-plane", "pod ServiceAccount")
    check(pod["securityContext"]["runAsNonRoot"] is True, "pod runAsNonRoot")
    check(c["securityContext"]["readOnlyRootFilesystem"] is True, "readOnlyRootFilesystem")
    check(c["securityContext"]["allowPrivilegeEscalation"] is False, "allowPrivilegeEscalation")
    check(c["securityContext"]["capabilities"]["drop"] == ["ALL"], "capabilities not dropped")
    check(c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "admin"}, "liveness probe")
    check(c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}, "readiness probe")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"stream": 8086, "webhook": 9443, "admin": 9990}, f"container ports {ports}")
    check(c["args"][:2] == ["run", "--kubernetes"], f"args start {c['args'][:2]}")
    for flag, want in [("--listen", "0.0.0.0:8086"), ("--admin", "0.0.0.0:9990"),
                       ("--webhook-listen", "0.0.0.0:9443"),
                       ("--proxy-control-plane", f"remora-control-plane.{NS}.svc:8086")]:
        check(arg(c, flag) == want, f"{flag} is {arg(c, flag)}, want {want}")
    check("requests" in c["resources"], "control plane has no resource requests")
    # Every file an argument names is on a mounted volume of the right source.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for flag in ["--tls-cert", "--tls-key", "--ca-cert", "--ca-key", "--webhook-cert", "--webhook-key"]:
        path = arg(c, flag)
        check(path is not None and os.path.dirname(path) in mounts, f"{flag}={path} is not on a mount")
    def secret_of(flag):
        return volumes[mounts[os.path.dirname(arg(c, flag))]]["secret"]["secretName"]
    check(secret_of("--tls-cert") == "remora-control-plane-tls", "--tls-cert secret")
    check(secret_of("--webhook-cert") == "remora-injector-tls", "--webhook-cert secret")

    for name, port, target in [("remora-control-plane", 8086, "stream"), ("remora-control-plane", 9990, "admin"),
                               ("remora-injector", 443, "webhook")]:
        svc = objs[("Service", name)]
        check(svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], f"Service {name} selector")
        check(any(p["port"] == port and p["targetPort"] == target for p in svc["spec"]["ports"]),
              f"Service {name} has no port {port} -> {target}")
    for (kind, name, *_), o in objs.items():
        if kind == "CustomResourceDefinition":
            crd(name, o)
            continue
        labels = o["metadata"].get("labels", {})
        for key in ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                    "helm.sh/chart", "app.kubernetes.io/part-of"]:
            check(key in labels, f"{kind}/{name} lacks label {key}")

    hook = objs[("MutatingWebhookConfiguration", "remora-injector")]
    inj = objs[("Secret", "remora-injector-tls")]["data"]
    for w in hook["webhooks"]:
        check(w["clientConfig"]["service"] == {"name": "remora-injector", "namespace": NS, "path": "/inject",
                                                "port": 443}, f"{w['name']} clientConfig")
        check(w["clientConfig"]["caBundle"] == inj["ca.crt"], f"{w['name']} caBundle is not the injector's CA")
        check(w["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}], f"{w['name']} rules")
        check(w["sideEffects"] == "None" and w["admissionReviewVersions"] == ["v1"], f"{w['name']} sideEffects/versions")
        names = [e for e in w["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"]
        check(len(names) == 1 and names[0]["operator"] == "NotIn" and NS in names[0]["values"],
              f"{w['name']} does not exclude the control plane's namespace")
    byname = {w["name"]: w for w in hook["webhooks"]}
    check(set(byname) == {"namespace.inject.remora.io", "pod.inject.remora.io"}, f"webhooks {set(byname)}")
    ns_sel = {e["key"]: (e["operator"], e["values"]) for e in byname["namespace.inject.remora.io"]["namespaceSelector"]["matchExpressions"]}
    check(ns_sel["remora.io/inject"] == ("In", ["enabled"]), "namespace webhook: namespace opt-in label")
    obj_sel = byname["namespace.inject.remora.io"]["objectSelector"]["matchExpressions"]
    check(obj_sel == [{"key": "remora.io/inject", "operator": "NotIn", "values": ["disabled"]}], "pod opt-out")
    pod_sel = byname["pod.inject.remora.io"]["objectSelector"]["matchExpressions"]
    check(pod_sel == [{"key": "remora.io/inject", "operator": "In", "values": ["enabled"]}], "pod opt-in")
    trust = objs[("ConfigMap", "remora-trust-roots")]["data"]["ca.crt"]
    cp_ca = base64.b64decode(objs[("Secret", "remora-control-plane-tls")]["data"]["ca.crt"]).decode()
    check(trust.strip() == cp_ca.strip(), "remora-trust-roots ca.crt is not the CA of port 8086's certificate")
    return c, dep, hook


def case_checks(case, objs, c, dep, hook):
    pdb = objs.get(("PodDisruptionBudget", "remora-control-plane"))
    policies = {w["failurePolicy"] for w in hook["webhooks"]}
    ca_volume = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "ca"][0]
    if case == "byo-ca":
        check(("Secret", "remora-ca") not in objs, "a CA Secret is rendered although the user brings one")
        check(ca_volume["secret"]["secretName"] == "my-mesh-ca", "CA volume is not the user's Secret")
        check(arg(c, "--trust-roots") == "/var/run/remora/ca/ca.crt", "--trust-roots for the user's bundle")
        check(arg(c, "--trust-domain") == "prod.example.com", "--trust-domain")
        return
    if ("Secret", "remora-ca") not in objs:
        failures.append("no CA Secret")
        return
    check(objs[("Secret", "remora-ca")]["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep",
          "the CA Secret is not kept on uninstall")
    check(ca_volume["secret"]["secretName"] == "remora-ca", "CA volume")
    check(arg(c, "--trust-roots") is None, "--trust-roots without a user bundle")
    if case == "default":
        check(dep["spec"]["replicas"] == 2, "default replicas")
        check(pdb is not None and pdb["spec"]["minAvailable"] == 1, "default PDB minAvailable 1")
        check(policies == {"Ignore"}, f"default failurePolicy {policies}")
        aff = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        check("preferredDuringSchedulingIgnoredDuringExecution" in aff, "anti-affinity is not preferred")
        check(c["image"] == "remora-control-plane:0.1.0", f"default image {c['image']}")
        check(arg(c, "--proxy-image") == "remora-proxy:0.1.0", "default proxy image")
        check(arg(c, "--sidecar-mode") == "native", "default sidecar mode")
        check(arg(c, "--trust-domain") == "cluster.local", "default trust domain")
        for flag, want in [("--proxy-cpu-request", "100m"), ("--proxy-memory-request", "64Mi"),
                           ("--proxy-cpu-limit", ""), ("--proxy-memory-limit", "256Mi")]:
            check(arg(c, flag) == want, f"{flag} is {arg(c, flag)!r}, want {want!r}")
        check(not [k for k in objs if len(k) > 2], "objects outside the release namespace by default")
        check(arg(c, "--tracing-collector") is None, "tracing off by default")
    elif case == "tracing":
        for flag, want in [("--tracing-collector", "otel-collector.observability:4317"),
                           ("--tracing-protocol", "grpc"), ("--tracing-sampling", "0.1")]:
            check(arg(c, flag) == want, f"{flag} is {arg(c, flag)!r}, want {want!r}")
    elif case == "replicas-3":
        check(dep["spec"]["replicas"] == 3, "replicas 3")
        check(pdb["spec"]["minAvailable"] == 2, "PDB minAvailable 2")
    elif case == "failure-policy-fail":
        check(policies == {"Fail"}, f"failurePolicy {policies}")
        check({w["timeoutSeconds"] for w in hook["webhooks"]} == {5}, "timeoutSeconds")
        for w in hook["webhooks"]:
            names = [e for e in w["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"]
            check(names[0]["values"] == [NS, "kube-system", "monitoring"], f"excluded {names[0]['values']}")
    elif case == "custom-images":
        check(c["image"] == "registry.example.com/mesh/remora-control-plane:1.2.3", f"image {c['image']}")
        check(c["imagePullPolicy"] == "Always", "pull policy")
        check(dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}], "pull secrets")
        check(arg(c, "--proxy-image") == "registry.example.com/mesh/remora-proxy:1.2.3-debug", "proxy image")
        trust = objs[("ConfigMap", "remora-trust-roots")]["data"]
        for target in ["shop", "payments"]:
            copy = objs.get(("ConfigMap", "remora-trust-roots", target))
            check(copy is not None and copy["data"] == trust, f"no copy of remora-trust-roots in {target}")
        check(arg(c, "--proxy-log-level") == "warn,remora_proxy=debug", "proxy log level")
        check(arg(c, "--sidecar-mode") == "container", "sidecar mode")
        for flag, want in [("--proxy-cpu-request", "10m"), ("--proxy-memory-request", "20Mi"),
                           ("--proxy-cpu-limit", "1"), ("--proxy-memory-limit", "64Mi")]:
            check(arg(c, flag) == want, f"{flag} is {arg(c, flag)}")
        env = {e["name"]: e.get("value") for e in c["env"]}
        check(env.get("RUST_LOG") == "debug", "RUST_LOG")
    else:
        failures.append(f"unknown case {case}")


def extract(objs, out):
    os.makedirs(out, exist_ok=True)
    for (kind, name, *_), o in objs.items():
        if kind == "Secret":
            for key, value in o["data"].items():
                with open(os.path.join(out, f"{name}.{key}"), "wb") as f:
                    f.write(base64.b64decode(value))
    hook = objs[("MutatingWebhookConfiguration", "remora-injector")]
    with open(os.path.join(out, "caBundle.crt"), "wb") as f:
        f.write(base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]))
    with open(os.path.join(out, "trust-roots.ca.crt"), "w") as f:
        f.write(objs[("ConfigMap", "remora-trust-roots")]["data"]["ca.crt"])


def certificates(objs):
    out = {}
    for name in ["remora-ca", "remora-control-plane-tls", "remora-injector-tls"]:
        for key, value in objs[("Secret", name)]["data"].items():
            out[f"{name}/{key}"] = value
    hook = objs[("MutatingWebhookConfiguration", "remora-injector")]
    out["caBundle"] = hook["webhooks"][0]["clientConfig"]["caBundle"]
    out["remora-trust-roots/ca.crt"] = objs[("ConfigMap", "remora-trust-roots")]["data"]["ca.crt"]
    return out


def compare(mode, first, second):
    a, b = certificates(load(first)), certificates(load(second))
    for key in a:
        if mode == "same":
            check(a[key] == b[key], f"{key} changed between the renderings")
        else:
            check(a[key] != b[key], f"{key} was reused although no Secret existed")
    for f in failures:
        print(f"check.py --secrets {mode}: FAIL: {f}")
    if failures:
        sys.exit(1)
    print(f"check.py --secrets {mode}: {len(a)} certificate fields ok")


def main():
    if sys.argv[1] == "--secrets":
        return compare(sys.argv[2], sys.argv[3], sys.argv[4])
    rendered, case = sys.argv[1], sys.argv[2]
    objs = load(rendered)
    c, dep, hook = common(objs)
    case_checks(case, objs, c, dep, hook)
    if len(sys.argv) > 3:
        extract(objs, sys.argv[3])
    for f in failures:
        print(f"check.py {case}: FAIL: {f}")
    if failures:
        sys.exit(1)
    print(f"check.py {case}: {len(objs)} objects ok")


if __name__ == "__main__":
    main()
