#!/usr/bin/env bash
# Assembles the remora-proxy and/or remora-control-plane OCI images on this
# machine, without a container engine and without pulling any base image:
# the root file system is the locally built binary plus the files it needs
# taken from this (Debian 12) host — the shared libraries `ldd` names, and
# for the proxy Debian's iptables (xtables-nft-multi, xtables-legacy-multi,
# their libraries and extension modules) — then packed by umoci (Debian
# package umoci) into an OCI image layout, with the same user, entrypoint
# and ports as docker/*.Dockerfile. Each image is then unpacked again and
# its binaries run in a chroot (as the image's user), and the proxy's
# `remora-proxy init` programs iptables inside a new network namespace.
#
#   scripts/build-images.sh [--profile debug|release] [--out DIR] [proxy] [control-plane]
#
# Default: both images, the binaries of target/debug (cargo build first;
# `--profile release` for target/release), written to target/images/oci
# (tag remora-proxy:<version>, remora-control-plane:<version>) and as
# target/images/<name>.oci.tar (load with `podman load -i` or `skopeo copy
# oci-archive:...`). Needs root (files owned by root in the image, chroot,
# unshare) and umoci.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
out=target/images
images=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        proxy|control-plane) images+=("$1"); shift ;;
        *) echo "usage: $0 [--profile debug|release] [--out DIR] [proxy] [control-plane]" >&2; exit 2 ;;
    esac
done
[ ${#images[@]} -gt 0 ] || images=(proxy control-plane)

die() { printf 'build-images: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf 'build-images: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || die "run as root (chroot, unshare, root-owned image files)"
command -v umoci >/dev/null || die "umoci not found: apt-get install umoci"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
layout=$out/oci
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
[ -d "$layout" ] || umoci init --layout "$layout"

# Copies an ELF file (to dest, default its own path) and every shared
# library it loads into $root, at the same paths (symlinks resolved: each
# lands as a regular file).
copy_elf() { # root, file, [dest]
    local root=$1 file=$2 dest=${3:-$2} lib
    install -D -m 0755 "$(readlink -f "$file")" "$root$dest"
    for lib in $(ldd "$file" | grep -o '/[^ ]*'); do
        [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
}

# The base every image shares: /etc/passwd and /etc/group, /tmp.
base_fs() { # root, uid, user
    local root=$1 uid=$2 user=$3
    mkdir -p "$root/etc" "$root/tmp" "$root/run"
    chmod 1777 "$root/tmp"
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n%s:x:%s:%s::/nonexistent:/usr/sbin/nologin\n' \
        "$user" "$uid" "$uid" >"$root/etc/passwd"
    printf 'root:x:0:\n%s:x:%s:\n' "$user" "$uid" >"$root/etc/group"
}

proxy_fs() { # root
    local root=$1 bin=target/$profile/remora-proxy t m f
    [ -x "$bin" ] || die "$bin not found: cargo build -p remora-proxy ${profile/debug/}"
    base_fs "$root" 2102 remora
    copy_elf "$root" "$bin" /usr/local/bin/remora-proxy
    for m in xtables-nft-multi xtables-legacy-multi; do
        copy_elf "$root" "/usr/sbin/$m"
    done
    for t in iptables ip6tables; do
        for f in save restore; do
            ln -sf xtables-nft-multi "$root/usr/sbin/$t-nft-$f"
            ln -sf xtables-legacy-multi "$root/usr/sbin/$t-legacy-$f"
        done
        ln -sf xtables-nft-multi "$root/usr/sbin/$t-nft"
        ln -sf xtables-legacy-multi "$root/usr/sbin/$t-legacy"
    done
    # The iptables extension modules (libxt_*.so, loaded by name) and theirs.
    mkdir -p "$root/usr/lib/x86_64-linux-gnu/xtables"
    for f in /usr/lib/x86_64-linux-gnu/xtables/*.so; do
        copy_elf "$root" "$f"
    done
}

control_plane_fs() { # root
    local root=$1 bin=target/$profile/remora-control-plane
    [ -x "$bin" ] || die "$bin not found: cargo build -p remora-control-plane"
    base_fs "$root" 65532 nonroot
    copy_elf "$root" "$bin" /usr/local/bin/remora-control-plane
}

build() { # name
    local name=$1 tag="$1:$version" bundle=$work/$1 user entry ports
    case "$name" in
        proxy) tag="remora-proxy:$version"; user=2102:2102; entry=/usr/local/bin/remora-proxy; ports="4140 4143 4191" ;;
        control-plane) tag="remora-control-plane:$version"; user=65532:65532
                       entry=/usr/local/bin/remora-control-plane; ports="8086 9443 9990" ;;
    esac
    log "assembling $tag from target/$profile"
    umoci new --image "$layout:$tag"
    umoci unpack --image "$layout:$tag" "$bundle"
    if [ "$name" = proxy ]; then proxy_fs "$bundle/rootfs"; else control_plane_fs "$bundle/rootfs"; fi
    umoci repack --image "$layout:$tag" "$bundle"
    local cfg=(--image "$layout:$tag" --os linux --architecture amd64
               --config.user "$user" --config.entrypoint "$entry" --config.cmd --help
               --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
               --config.label "org.opencontainers.image.title=remora-$name"
               --config.label "org.opencontainers.image.version=$version")
    local p
    for p in $ports; do cfg+=(--config.exposedports "$p/tcp"); done
    umoci config "${cfg[@]}"
    umoci gc --layout "$layout"
    rm -rf "$bundle"
    verify "$name" "$tag" "$user" "$entry"
    rm -f "$out/remora-$name.oci.tar"
    # An OCI archive of this one image.
    local one=$work/one-$name
    mkdir -p "$one"
    cp -a "$layout"/. "$one"/
    python3 - "$one" "$tag" <<'PY'
import json, sys
d, tag = sys.argv[1], sys.argv[2]
idx = json.load(open(f"{d}/index.json"))
idx["manifests"] = [m for m in idx["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
json.dump(idx, open(f"{d}/index.json", "w"))
PY
    umoci gc --layout "$one"
    tar -C "$one" -cf "$out/remora-$name.oci.tar" .
    log "wrote $out/remora-$name.oci.tar ($(du -h "$out/remora-$name.oci.tar" | cut -f1))"
}

# The image's config as umoci wrote it, then its binaries run in a chroot.
verify() { # name, tag, user, entrypoint
    local name=$1 tag=$2 user=$3 entry=$4 check=$work/check-$1
    python3 - "$layout" "$tag" "$user" "$entry" <<'PY'
import json, sys
layout, tag, user, entry = sys.argv[1:]
blob = lambda d: json.load(open(f"{layout}/blobs/" + d.replace(":", "/")))
m = [m for m in json.load(open(f"{layout}/index.json"))["manifests"]
     if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag][0]
manifest = blob(m["digest"])
cfg = blob(manifest["config"]["digest"])["config"]
print(f"build-images: {tag}: User={cfg['User']} Entrypoint={cfg['Entrypoint']} Cmd={cfg.get('Cmd')} "
      f"ExposedPorts={sorted(cfg.get('ExposedPorts', {}))} layers={len(manifest['layers'])}", file=sys.stderr)
assert cfg["User"] == user, cfg["User"]
assert cfg["Entrypoint"] == [entry], cfg["Entrypoint"]
PY
    umoci unpack --image "$layout:$tag" "$check" >/dev/null
    local rootfs=$check/rootfs
    log "$tag: $(chroot --userspec="$user" "$rootfs" "$entry" --version) (run in a chroot as $user)"
    if [ "$name" = proxy ]; then
        local t
        for t in iptables-nft-save iptables-nft-restore iptables-legacy-save iptables-legacy-restore \
                 ip6tables-nft-save ip6tables-nft-restore ip6tables-legacy-save ip6tables-legacy-restore; do
            chroot "$rootfs" "/usr/sbin/$t" --version >/dev/null || die "$tag: $t does not run"
        done
        # The init step for real, in a new network namespace: rules appear.
        # A container runtime provides /dev; the chroot gets /dev/null.
        mkdir -p "$rootfs/dev" && mknod -m 0666 "$rootfs/dev/null" c 1 3
        unshare --net chroot "$rootfs" sh -c true 2>/dev/null && die "the image has a shell"
        unshare --net env PATH=/usr/local/bin:/usr/sbin:/usr/bin bash -c "chroot '$rootfs' /usr/local/bin/remora-proxy init --iptables-mode nft >/dev/null \
            && chroot '$rootfs' /usr/sbin/iptables-nft-save -t nat" >"$work/rules.txt" \
            || die "$tag: remora-proxy init failed in the image"
        grep -q 'REDIRECT --to-ports 4143' "$work/rules.txt" || die "$tag: no inbound redirect after init"
        grep -q 'REDIRECT --to-ports 4140' "$work/rules.txt" || die "$tag: no outbound redirect after init"
        log "$tag: remora-proxy init programmed iptables (nft) in a new network namespace, from the image's files"
    fi
    rm -rf "$check"
}

for image in "${images[@]}"; do
    build "$image"
done
log "images in $layout: $(umoci ls --layout "$layout" | tr '\n' ' ')"
