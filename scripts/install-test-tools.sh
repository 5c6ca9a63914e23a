#!/usr/bin/env bash
# Installs the real clients the tests drive that a fresh machine lacks: GNU SASL's `gsasl`
# (SCRAM-SHA-256-PLUS with tls-exporter channel binding, SASLprep). Called by .ci/run before the
# tests, and by the tests themselves when the tool is missing (so `cargo test` works from a
# fresh clone too). Needs root and Debian's package registry; does nothing when all are there.
set -euo pipefail
missing=()
command -v gsasl >/dev/null 2>&1 || missing+=(gsasl)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo -n"
fi
echo "install-test-tools: installing ${missing[*]} with apt-get" >&2
# apt-get takes a lock: tests running in parallel wait for each other here.
exec 9>/tmp/smtp-rs-install-test-tools.lock
flock 9
command -v gsasl >/dev/null 2>&1 && exit 0
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
