#!/usr/bin/env bash
# Tests of the Helm chart charts/remora, with a real helm (v4, installed by
# scripts/install-test-deps.sh into .tools/) and kubernetes-validate (PyPI):
#
#   1. helm lint --strict, with the default values and each value set of
#      tests/helm/values/*.yaml;
#   2. helm template for each value set, the output validated against the
#      Kubernetes 1.33 schemas (--strict: unknown fields are errors), then
#      the objects a user relies on asserted by tests/helm/check.py;
#   3. values.schema.json (or the chart, for bad-pdb) refuses each
#      tests/helm/values/bad-*.yaml;
#   4. the rendered certificates checked with openssl: the mesh CA is an
#      ECDSA P-256 CA with its PKCS#8 key, each serving certificate verifies
#      against its CA for its Service's DNS name, the webhook's caBundle is
#      the injector's CA;
#   5. the chart's lookups on upgrade, with helm template --dry-run=server
#      against tests/helm/fake_api.py (recorded API answers, no cluster):
#      the Secrets of a first release are reused, none means all new;
#   6. the real remora-control-plane runs with the rendered CA Secret and
#      serving certificate (on examples/mesh.yaml, loopback, port 0), and a
#      certificate it issues over TLS (verified with the rendered
#      remora-trust-roots) verifies against the rendered CA; then a real
#      remora-proxy (rustls) connects with the rendered trust roots, gets
#      its certificate and becomes ready.
#
# Run by control-plane/tests/helm_chart.rs (cargo test), which passes the
# binary it built as REMORA_CONTROL_PLANE_BIN (remora-proxy is taken from
# beside it). Standalone:
#   cargo build -p remora-control-plane -p remora-proxy && tests/helm/run.sh
#
# Environment: HELM (default .tools/helm), KUBERNETES_VALIDATE (default
# kubernetes-validate), REMORA_CONTROL_PLANE_BIN (default
# target/debug/remora-control-plane), REMORA_PROXY_BIN (default: beside
# it), REMORA_CHART (default charts/remora).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
HELM=${HELM:-$root/.tools/helm}
KV=${KUBERNETES_VALIDATE:-kubernetes-validate}
CP_BIN=${REMORA_CONTROL_PLANE_BIN:-$root/target/debug/remora-control-plane}
PROXY_BIN=${REMORA_PROXY_BIN:-$(dirname "$CP_BIN")/remora-proxy}
CHART=${REMORA_CHART:-charts/remora}
NS=remora-system
K8S=1.33.0

fail() { printf 'helm tests: FAIL: %s\n' "$*" >&2; exit 1; }
step() { printf 'helm tests: %s\n' "$*"; }

[ -x "$HELM" ] || fail "no helm at $HELM: run scripts/install-test-deps.sh"
command -v "$KV" >/dev/null || fail "no $KV: run scripts/install-test-deps.sh"
command -v openssl >/dev/null || fail "no openssl: run scripts/install-test-deps.sh"
[ -x "$CP_BIN" ] || fail "no control plane binary at $CP_BIN: cargo build -p remora-control-plane"
[ -x "$PROXY_BIN" ] || fail "no proxy binary at $PROXY_BIN: cargo build -p remora-proxy (cargo test --workspace builds it)"
step "$("$HELM" version --short), $("$KV" --version | head -1) (kubernetes-validate)"

work=$(mktemp -d)
cp_pid=""
proxy_pid=""
cleanup() {
    if [ -n "$proxy_pid" ]; then kill "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; fi
    if [ -n "${api_pid:-}" ]; then kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
    if [ -n "$cp_pid" ]; then kill "$cp_pid" 2>/dev/null || true; wait "$cp_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# ------------------------------------------------ lint, template, validate --
cases=(default byo-ca replicas-3 failure-policy-fail custom-images tracing)
for case in "${cases[@]}"; do
    args=()
    [ "$case" = default ] || args=(-f "tests/helm/values/$case.yaml")
    "$HELM" lint --strict "$CHART" "${args[@]}" >"$work/lint.txt" 2>&1 \
        || { cat "$work/lint.txt"; fail "helm lint --strict ($case)"; }
    "$HELM" template remora "$CHART" -n "$NS" --include-crds "${args[@]}" >"$work/$case.yaml" \
        || fail "helm template ($case)"
    "$KV" --strict --quiet -k "$K8S" "$work/$case.yaml" \
        || fail "kubernetes-validate --strict -k $K8S ($case)"
    out=()
    [ "$case" = default ] && out=("$work/certs")
    python3 tests/helm/check.py "$work/$case.yaml" "$case" "${out[@]}" || fail "check.py ($case)"
done
step "lint, template, kubernetes-validate --strict -k $K8S and check.py: ${cases[*]}"

# Every flag the chart passes is one the real binary takes, with a value it
# parses (clap stops at the final --help only after reading all before it):
# the default rendering, and the one with tracing on.
for case in default tracing; do
python3 - "$work/$case.yaml" >"$work/cp-args.txt" <<'PY' || fail "no control-plane container args in the rendering"
import sys, yaml
for o in yaml.safe_load_all(open(sys.argv[1])):
    if o and o.get("kind") == "Deployment":
        for c in o["spec"]["template"]["spec"]["containers"]:
            if c["name"] == "control-plane":
                print("\n".join(c["args"]))
                sys.exit(0)
sys.exit(1)
PY
mapfile -t cp_args <"$work/cp-args.txt"
"$CP_BIN" "${cp_args[@]}" --help >/dev/null 2>"$work/args-err.txt" \
    || { cat "$work/args-err.txt"; fail "remora-control-plane refuses the chart's args ($case): ${cp_args[*]}"; }
step "remora-control-plane takes every flag the chart passes ($case: ${#cp_args[@]} args)"
done

# The validator is not a no-op: an unknown field in the Deployment is refused.
sed 's/^  replicas: 2$/  replicaz: 2/' "$work/default.yaml" >"$work/tampered.yaml"
grep -q '^  replicaz: 2$' "$work/tampered.yaml" || fail "could not tamper the rendered Deployment"
if "$KV" --strict --quiet -k "$K8S" "$work/tampered.yaml" >/dev/null 2>&1; then
    fail "kubernetes-validate accepted an unknown field"
fi

# --------------------------------------------------------------- schema --
expect_refused() { # values file, the path the error must name
    if "$HELM" template remora "$CHART" -n "$NS" -f "tests/helm/values/$1" >/dev/null 2>"$work/err.txt"; then
        fail "helm template accepted $1"
    fi
    grep -q -- "$2" "$work/err.txt" || { cat "$work/err.txt"; fail "$1: the error does not name $2"; }
}
expect_refused bad-replicas.yaml "/controlPlane/replicas"
expect_refused bad-failure-policy.yaml "/injector/failurePolicy"
expect_refused bad-unknown-key.yaml "replica"
expect_refused bad-sidecar-mode.yaml "/proxy/sidecarMode"
expect_refused bad-tracing-protocol.yaml "/tracing/protocol"
if "$HELM" template remora "$CHART" -n "$NS" --kube-version 1.28.9 >/dev/null 2>"$work/err.txt"; then
    fail "helm template accepted Kubernetes 1.28 (kubeVersion is >= 1.29: native sidecars)"
fi
grep -q 'kubeVersion' "$work/err.txt" || { cat "$work/err.txt"; fail "the 1.28 refusal does not name kubeVersion"; }
expect_refused bad-pdb.yaml "minAvailable (1) must be less than controlPlane.replicas (1)"
step "values refused: replicas \"two\", failurePolicy Sometimes, an unknown key, sidecarMode ambient, tracing protocol zipkin (schema); a PDB no drain can satisfy, Kubernetes 1.28 (chart)"

# ------------------------------------------------------------ openssl --
c=$work/certs
grep -q -- '-----BEGIN PRIVATE KEY-----' "$c/remora-ca.tls.key" || fail "the CA key is not PKCS#8 PEM"
openssl pkey -in "$c/remora-ca.tls.key" -noout -text >"$work/key.txt" || fail "openssl cannot read the CA key"
grep -q 'ASN1 OID: prime256v1' "$work/key.txt" || fail "the CA key is not ECDSA P-256"
openssl x509 -in "$c/remora-ca.tls.crt" -noout -text >"$work/ca.txt" || fail "openssl cannot read the CA"
grep -q 'CA:TRUE' "$work/ca.txt" || fail "the CA certificate is not a CA"
grep -q 'Certificate Sign' "$work/ca.txt" || fail "the CA certificate may not sign certificates"
[ "$(openssl pkey -in "$c/remora-ca.tls.key" -pubout)" = "$(openssl x509 -in "$c/remora-ca.tls.crt" -noout -pubkey)" ] \
    || fail "the CA key does not belong to the CA certificate"
for svc in remora-control-plane remora-injector; do
    openssl verify -purpose sslserver -verify_hostname "$svc.$NS.svc" \
        -CAfile "$c/$svc-tls.ca.crt" "$c/$svc-tls.tls.crt" >/dev/null \
        || fail "$svc's certificate does not verify against its CA for $svc.$NS.svc"
    [ "$(openssl pkey -in "$c/$svc-tls.tls.key" -pubout)" = "$(openssl x509 -in "$c/$svc-tls.tls.crt" -noout -pubkey)" ] \
        || fail "$svc's key does not belong to its certificate"
done
cmp -s "$c/caBundle.crt" "$c/remora-injector-tls.ca.crt" || fail "the webhook caBundle is not the injector's CA"
# The two serving CAs are distinct (and openssl verify can fail).
if openssl verify -CAfile "$c/remora-control-plane-tls.ca.crt" "$c/remora-injector-tls.tls.crt" >/dev/null 2>&1; then
    fail "the injector's certificate verifies against the control plane's CA"
fi
step "openssl: CA is ECDSA P-256 + CA:TRUE + PKCS#8 key; serving certs verify for their DNS names; caBundle ok"

# ------------------------- lookup on upgrade, against recorded API answers --
# helm template --dry-run=server runs the chart's lookups against
# tests/helm/fake_api.py: serving the Secrets of the default rendering (as a
# first release left them), an upgrade keeps every certificate; serving
# none, all are new.
api_pid=""
fake_render() { # secrets file, output
    rm -f "$work/port"
    python3 tests/helm/fake_api.py "$1" "$work/port" remora "$NS" 2>>"$work/api.log" &
    api_pid=$!
    for _ in $(seq 1 50); do [ -s "$work/port" ] && break; sleep 0.1; done
    [ -s "$work/port" ] || fail "fake_api.py did not start"
    cat >"$work/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:$(cat "$work/port")"}}]
users: [{name: fake, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
current-context: fake
KC
    KUBECONFIG=$work/kubeconfig "$HELM" template remora "$CHART" -n "$NS" \
        --dry-run=server --disable-openapi-validation >"$2" 2>"$work/err.txt" \
        || { cat "$work/err.txt"; kill "$api_pid"; fail "helm template --dry-run=server"; }
    kill "$api_pid"; wait "$api_pid" 2>/dev/null || true; api_pid=""
}
fake_render "$work/default.yaml" "$work/upgrade.yaml"
for s in remora-ca remora-control-plane-tls remora-injector-tls; do
    grep -q "GET /api/v1/namespaces/$NS/secrets/$s\$" "$work/api.log" || fail "no lookup of Secret $s"
done
python3 tests/helm/check.py --secrets same "$work/default.yaml" "$work/upgrade.yaml" || fail "upgrade kept certificates"
: >"$work/none.yaml"
fake_render "$work/none.yaml" "$work/fresh.yaml"
python3 tests/helm/check.py --secrets new "$work/default.yaml" "$work/fresh.yaml" || fail "fresh install"
python3 tests/helm/check.py "$work/upgrade.yaml" default || fail "check.py (upgrade)"
step "lookup against recorded API answers: an upgrade keeps the CA and every certificate; without Secrets all are new"

# ------------------------------------- the control plane on the rendered CA --
token=$(openssl rand -hex 32)
printf 'tokens:\n  - { token: %s, workload: web }\n' "$token" >"$work/tokens.yaml"
# examples/mesh.yaml, with web's outbound listener on port 0 (its proxy runs below).
sed 's/127\.0\.0\.1:4140/127.0.0.1:0/' examples/mesh.yaml >"$work/mesh.yaml"
grep -q '127.0.0.1:0' "$work/mesh.yaml" || fail "examples/mesh.yaml has no 127.0.0.1:4140 to move to port 0"
RUST_LOG=info "$CP_BIN" run --mesh "$work/mesh.yaml" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    --ca-cert "$c/remora-ca.tls.crt" --ca-key "$c/remora-ca.tls.key" --join-tokens "$work/tokens.yaml" \
    --tls-cert "$c/remora-control-plane-tls.tls.crt" --tls-key "$c/remora-control-plane-tls.tls.key" \
    >"$work/cp.log" 2>&1 &
cp_pid=$!
bound() { # the address logged on a line containing $1
    sed -n "s/.*$1.*address=\([0-9.:]*\).*/\1/p" "$work/cp.log" | head -1
}
admin="" listen="" ready=""
for _ in $(seq 1 100); do # at most ~10 s
    kill -0 "$cp_pid" 2>/dev/null || { cat "$work/cp.log"; fail "the control plane exited"; }
    admin=$(bound "admin bound") listen=$(bound "control plane bound")
    if [ -n "$admin" ] && [ -n "$listen" ] && ready=$(curl -fsS "http://$admin/ready" 2>/dev/null); then
        break
    fi
    sleep 0.1
done
[ -n "$ready" ] || { cat "$work/cp.log"; fail "the control plane never answered /ready"; }
grep -q 'CA loaded' "$work/cp.log" || { cat "$work/cp.log"; fail "no 'CA loaded' in the control plane's log"; }

# A certificate from the rendered CA, over TLS verified with the rendered
# remora-trust-roots for the Service's name.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/web.key" \
    -subj / -out "$work/web.csr" 2>/dev/null
python3 -c 'import json,sys; print(json.dumps({"workload": "web", "csr": open(sys.argv[1]).read()}))' \
    "$work/web.csr" >"$work/req.json"
name="remora-control-plane.$NS.svc"
curl -fsS --cacert "$c/trust-roots.ca.crt" --resolve "$name:${listen##*:}:127.0.0.1" \
    -H "authorization: Bearer $token" -H 'content-type: application/json' \
    --data-binary @"$work/req.json" "https://$name:${listen##*:}/v1/certify" >"$work/resp.json" \
    || { cat "$work/cp.log"; fail "POST /v1/certify over TLS (verified with remora-trust-roots) failed"; }
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["certificate_chain"], end="")' \
    "$work/resp.json" >"$work/web.crt"
openssl verify -CAfile "$c/remora-ca.tls.crt" "$work/web.crt" >/dev/null \
    || fail "the issued certificate does not verify against the rendered CA"
openssl x509 -in "$work/web.crt" -noout -ext subjectAltName | grep -q 'URI:spiffe://example.org/ns/shop/sa/web' \
    || fail "the issued certificate is not for spiffe://example.org/ns/shop/sa/web"
step "remora-control-plane loaded the rendered CA and serving cert; issued spiffe://example.org/ns/shop/sa/web under it"

# A real remora-proxy as an injected sidecar would run: it verifies port
# 8086 with the rendered remora-trust-roots (rustls, by the Service's DNS
# name), gets its certificate from the rendered CA, and becomes ready.
printf '%s\n' "$token" >"$work/web.token"
RUST_LOG=info "$PROXY_BIN" run --control-plane "$listen" --workload web \
    --control-plane-ca "$c/trust-roots.ca.crt" --control-plane-name "$name" \
    --identity-token "$work/web.token" --admin 127.0.0.1:0 >"$work/proxy.log" 2>&1 &
proxy_pid=$!
proxy_admin="" proxy_ready=""
for _ in $(seq 1 100); do # at most ~10 s
    kill -0 "$proxy_pid" 2>/dev/null || { cat "$work/proxy.log"; fail "remora-proxy exited"; }
    proxy_admin=$(sed -n 's/.*admin bound.*address=\([0-9.:]*\).*/\1/p' "$work/proxy.log" | head -1)
    if [ -n "$proxy_admin" ] && proxy_ready=$(curl -fsS "http://$proxy_admin/ready" 2>/dev/null); then
        break
    fi
    sleep 0.1
done
[ -n "$proxy_ready" ] || { cat "$work/proxy.log" "$work/cp.log"; fail "remora-proxy never became ready"; }
curl -fsS "http://$proxy_admin/metrics" >"$work/proxy.metrics"
grep -Eq '^remora_identity_renewals_total [1-9]' "$work/proxy.metrics" \
    || fail "the proxy got no certificate from the rendered CA"
grep -Eq '^remora_control_plane_connected 1' "$work/proxy.metrics" \
    || fail "the proxy is not connected to the control plane"
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=""
kill "$cp_pid"; wait "$cp_pid" 2>/dev/null || true; cp_pid=""
step "remora-proxy: TLS to the control plane verified with remora-trust-roots, certificate from remora-ca, ready"
step "all passed"
