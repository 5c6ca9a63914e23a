#!/usr/bin/env bash
# Installs the real clients and peers the tests drive that a fresh machine lacks: GNU SASL's
# `gsasl` (SCRAM-SHA-256-PLUS with tls-exporter channel binding, SASLprep) and Postfix's
# `smtp-sink` (a relay upstream; package `postfix`, installed unconfigured), and `redis-server`
# and `haproxy` for the fleet test (run as the test's children; their services are not started
# here), `swaks` for the conformance run's client checks, and Dovecot (`dovecot-core`) for the
# identity-store tests, OpenLDAP's `slapd` (with `slapadd` and `slappasswd`) for the LDAP
# store's, PostgreSQL for the SQL store's (each started by the test from its own
# configuration, never as a service), and fail2ban for `fail2ban-regex` (the shipped filter
# is checked against a log the server wrote; no daemon is started), and Python's dkimpy
# (with PyNaCl for ed25519-sha256, from PyPI for the python3 on PATH) to verify the DKIM
# signatures smtpd writes. Called by .ci/run before the
# tests, and by the tests themselves when the tool is missing (so `cargo test` works from a
# fresh clone too). Needs root and Debian's package registry; does nothing when all are there.
set -euo pipefail
missing=()
command -v gsasl >/dev/null 2>&1 || missing+=(gsasl)
have_sink() { command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ]; }
have_sink || missing+=(postfix)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
have_dovecot() { command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; }
have_dovecot || missing+=(dovecot-core)
have_slapd() { command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ]; }
have_slapd || missing+=(slapd)
have_postgres() { ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v psql >/dev/null 2>&1; }
have_postgres || missing+=(postgresql)
command -v fail2ban-regex >/dev/null 2>&1 || missing+=(fail2ban)
have_dkimpy() { python3 -c 'import dkim, nacl' >/dev/null 2>&1; }
if ! have_dkimpy; then
    # For the python3 first on PATH (Debian's, or another one such as pyenv's), from PyPI.
    echo "install-test-tools: installing dkimpy and PyNaCl with pip" >&2
    python3 -m pip install --quiet --disable-pip-version-check dkimpy pynacl >/dev/null 2>&1 \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
            dkimpy pynacl >/dev/null
fi
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
command -v gsasl >/dev/null 2>&1 && have_sink && command -v redis-server >/dev/null 2>&1 \
    && command -v haproxy >/dev/null 2>&1 && command -v swaks >/dev/null 2>&1 \
    && have_dovecot && have_slapd && have_postgres && command -v fail2ban-regex >/dev/null 2>&1 \
    && exit 0
$SUDO apt-get update -qq
# Postfix asks how to configure itself; "No configuration" installs the tools only.
echo 'postfix postfix/main_mailer_type select No configuration' | $SUDO debconf-set-selections
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
