#!/usr/bin/env bash
# Builds docs/deploy/Dockerfile with podman on a machine that reaches no image registry (this
# project's build machines reach crates.io and Debian's archive only), then runs the image and
# sends it one message. Not part of .ci/run: it takes about ten minutes and 3 GB of disk.
#
#   scripts/image-podman.sh [WORK_DIR]
#
# The Dockerfile's two pinned bases are replaced by stand-ins made here, passed as build args:
# - RUNTIME_IMAGE: Debian 12 from debootstrap (minbase, like debian:12-slim);
# - RUST_IMAGE: that Debian with gcc, libc6-dev, ca-certificates and this machine's Rust
#   toolchain (`rustc` on PATH, as in rust:1.95.0-slim-bookworm), plus the CA certificates in
#   /usr/local/share/ca-certificates (a proxy's, where egress goes through one).
# Everything else is the Dockerfile as shipped: the build stage, make, the non-root user, the
# entrypoint that runs check-config first.
#
# The container engine here runs as root in a VM with cgroup v1 and without CAP_SYS_RESOURCE:
# hence runc, cgroupfs, vfs storage and ulimits no higher than this shell's.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
export DEBIAN_FRONTEND=noninteractive
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq podman runc debootstrap >/dev/null; break; }
done
podman() {
    command podman --storage-driver=vfs --runtime runc --cgroup-manager=cgroupfs "$@"
}
limits=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

# The runtime stand-in.
if ! podman image exists localhost/debian-local:bookworm; then
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$work/rootfs" -c . | podman import - localhost/debian-local:bookworm
fi

# The build stand-in.
if ! podman image exists localhost/rust-local:1.95.0-slim-bookworm; then
    ctx="$work/rust-image"
    mkdir -p "$ctx/cas" "$ctx/rust"
    sysroot="$(rustc --print sysroot)"
    tar -C "$sysroot" --exclude=share/doc -cf - . | tar -C "$ctx/rust" -xf -
    cp /usr/local/share/ca-certificates/*.crt "$ctx/cas/" 2>/dev/null || true
    cat >"$ctx/Containerfile" <<'EOF'
FROM localhost/debian-local:bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY cas/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY rust /usr/local/rust
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo --version && rustc --version
EOF
    podman build --network=host "${limits[@]}" -t localhost/rust-local:1.95.0-slim-bookworm "$ctx"
fi

# The image, from the repository's Dockerfile and .dockerignore.
podman build --network=host "${limits[@]}" -f "$repo/docs/deploy/Dockerfile" \
    --build-arg RUST_IMAGE=localhost/rust-local:1.95.0-slim-bookworm \
    --build-arg RUNTIME_IMAGE=localhost/debian-local:bookworm \
    -t localhost/smtpd:local "$repo"

# Run it: configuration and users read-only, the Maildir volume owned by the image's user.
etc="$work/etc" data="$work/data"
mkdir -p "$etc" "$data"
cp "$repo/examples/users" "$etc/users"
cat >"$etc/smtpd.toml" <<'EOF'
[server]
hostname = "mail.image.test"
auth_require_tls = false
[[listener]]
address = "127.0.0.1:2587"
[auth]
backend = "file"
users_file = "/etc/smtpd/users"
[delivery]
kind = "maildir"
path = "/var/lib/smtpd/Maildir"
[metrics]
address = "127.0.0.1:9125"
EOF
chmod 0644 "$etc"/*
chown -R 10025:10025 "$data"
chmod 0700 "$data"
podman rm -f smtpd-image-check >/dev/null 2>&1 || true
podman run -d --name smtpd-image-check --network=host "${limits[@]}" \
    -v "$etc:/etc/smtpd:ro" -v "$data:/var/lib/smtpd" localhost/smtpd:local >/dev/null
trap 'podman rm -f smtpd-image-check >/dev/null 2>&1 || true' EXIT
for _ in $(seq 50); do
    [ "$(curl -s http://127.0.0.1:9125/readyz)" = ready ] && break
    sleep 0.2
done
printf 'From: demo@mail.image.test\r\nSubject: from the image\r\n\r\nHello from a container.\r\n' >"$work/msg.txt"
curl -sS smtp://127.0.0.1:2587 --user demo:demo-password --mail-from demo@mail.image.test \
    --mail-rcpt bob@example.org --upload-file "$work/msg.txt"
delivered=("$data"/Maildir/new/*)
[ -f "${delivered[0]}" ] || { echo "image-podman: nothing delivered" >&2; exit 1; }
owner="$(stat -c %u "${delivered[0]}")"
[ "$owner" = 10025 ] || { echo "image-podman: delivered as uid $owner, not 10025" >&2; exit 1; }
grep -q '^Hello from a container.' "${delivered[0]}"
podman stop -t 10 smtpd-image-check >/dev/null
code="$(command podman --storage-driver=vfs inspect smtpd-image-check --format '{{.State.ExitCode}}')"
[ "$code" = 0 ] || { echo "image-podman: exit code $code after SIGTERM" >&2; exit 1; }
echo "image-podman: built, served as uid 10025, delivered ${delivered[0]##*/}, stopped cleanly"
