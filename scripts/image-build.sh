#!/usr/bin/env bash
# The build stage of docs/deploy/Dockerfile, step for step: the Dockerfile runs this script
# inside rust:1.95.0-slim-bookworm, and .ci/run runs it on the host (no container engine or
# registry is reachable there), so the image's build steps are checked on every change.
#
#   scripts/image-build.sh OUT_DIR
#
# Builds the release smtpd from the lock file (--locked: the versions the tests ran with),
# checks that it runs as an unprivileged user's program would (`--version`, `check-config` of
# the shipped example), and leaves the binary in OUT_DIR.
set -euo pipefail
out="${1:?usage: scripts/image-build.sh OUT_DIR}"
cd "$(dirname "$0")/.."
# jemalloc's build (tikv-jemalloc-sys) runs make; the slim Rust image has cc but no make.
if ! command -v make >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" != 0 ] && SUDO="sudo -n"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends make >/dev/null
fi
cargo build --release --locked -p smtpd
bin="${CARGO_TARGET_DIR:-target}/release/smtpd"
"$bin" --version
# The example configuration names paths relative to the repository root.
"$bin" check-config examples/smtpd.toml
mkdir -p "$out"
cp "$bin" "$out/smtpd"
echo "image-build: $out/smtpd"
