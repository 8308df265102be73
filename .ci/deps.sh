#!/usr/bin/env bash
# Installs everything leakshim builds, tests and benchmarks with (Debian 12, as root): `make deps`.
# Database servers are never started as system services: tests start their own on spare ports.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n== %s (%ds)\n' "$*" "$SECONDS"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "make deps: must run as root (it installs packages)" >&2
    exit 1
fi

packages=(
    build-essential gcc make pkg-config binutils valgrind procps util-linux clang-format
    clang libclang-rt-14-dev
    libunwind-dev uthash-dev libcmocka-dev
    libpq-dev postgresql
    redis-server redis-tools libhiredis-dev
    mariadb-server mariadb-client libmariadb-dev
    libmongoc-dev libbson-dev
    python3 python3-dev python3-pytest python3-psycopg2 python3-redis python3-pymongo
    python3-sqlalchemy
)
if ! command -v node >/dev/null; then
    packages+=(nodejs npm)
elif ! command -v npm >/dev/null; then
    packages+=(npm)
fi

# Installing a server package must not start it: deny service starts for the duration (as a
# Docker image does), and put back whatever was there before.
policy=/usr/sbin/policy-rc.d
policy_backup=""
if [[ -e $policy ]]; then
    policy_backup="$(mktemp)"
    cp -p "$policy" "$policy_backup"
fi
restore_policy() {
    if [[ -n $policy_backup ]]; then mv -f "$policy_backup" "$policy"; else rm -f "$policy"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' >"$policy"
chmod 0755 "$policy"

apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600
          -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

step "apt-get update"
for i in 1 2 3; do
    apt-get update -q && break
    [[ $i -eq 3 ]] && exit 1
    sleep 10
done

step "apt-get install"
apt-get install "${apt_opts[@]}" "${packages[@]}"

restore_policy
trap - EXIT

step "toolchain"
cc --version | head -n1
node --version
/usr/bin/python3 --version
/usr/bin/python3 -m pytest --version

step "mongo test server (tests/mongo/setup.sh)"
bash tests/mongo/setup.sh

