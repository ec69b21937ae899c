# The remora-proxy image: the sidecar, and the init step that programs
# iptables (`remora-proxy init`, the injected init container runs this
# same image).
#
#   docker build -f docker/remora-proxy.Dockerfile -t remora-proxy:0.1.0 .
#
# Runtime: debian bookworm-slim plus Debian's iptables package, because
# `remora-proxy init` runs iptables-{nft,legacy}-{save,restore} (and the
# ip6tables ones); a distroless or scratch base has no iptables, and the
# static musl builds of iptables are not packaged. The glibc of the
# builder (bookworm) is the runtime's.
#
# Runs as UID/GID 2102 (`remora`): `remora-proxy init --proxy-uid` defaults
# to it, so the proxy's own connections are not redirected. The init
# container overrides the user (root, with NET_ADMIN and NET_RAW).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p remora-proxy \
    && install -D -m 0755 target/release/remora-proxy /out/remora-proxy

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 2102 remora \
    && useradd --system --uid 2102 --gid 2102 --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin remora
COPY --from=build /out/remora-proxy /usr/local/bin/remora-proxy
USER 2102:2102
EXPOSE 4140 4143 4191
ENTRYPOINT ["/usr/local/bin/remora-proxy"]
CMD ["--help"]
