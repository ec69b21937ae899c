# The remora-control-plane image: snapshot stream, CA, injector webhook.
#
#   docker build -f docker/remora-control-plane.Dockerfile -t remora-control-plane:0.1.0 .
#
# Runtime: a distroless "cc" image (glibc and libgcc, which a Rust binary
# links; no shell, no package manager) given as RUNTIME_IMAGE — pass the
# distroless cc-debian12:nonroot image from your registry — or, by default,
# Debian slim; either way as the non-root user 65532. The chart runs it
# with a read-only root file system.

ARG RUST_VERSION=1.95
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p remora-control-plane \
    && install -D -m 0755 target/release/remora-control-plane /out/remora-control-plane

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/remora-control-plane /usr/local/bin/remora-control-plane
USER 65532:65532
EXPOSE 8086 9443 9990
ENTRYPOINT ["/usr/local/bin/remora-control-plane"]
CMD ["--help"]
