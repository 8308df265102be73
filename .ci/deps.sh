#!/usr/bin/env bash
# Installs what leakshim needs on Debian 12, as root:
#   bash .ci/deps.sh demo   (make deps-demo) what `make demo` needs: build tools, libunwind, uthash,
#                           libpq, PostgreSQL, python3;
#   bash .ci/deps.sh test   (make deps) everything: the demo set, every test tier's servers, drivers
#                           and tools, the benchmarks, and the MongoDB wire server (npm).
# Database servers are never started as system services: tests start their own on spare ports.
# tools/setup runs this on a bare Debian 12 (see there); it sets LEAKSHIM_APT_UPDATED=1 when it has
# just run `apt-get update`, so it is not run twice.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n== %s (%ds)\n' "$*" "$SECONDS"; }

set_name="${1:-test}"
case $set_name in
demo | test) ;;
*) echo "usage: bash .ci/deps.sh [demo|test]" >&2; exit 2 ;;
esac

if [[ $(id -u) -ne 0 ]]; then
    echo "make deps: must run as root (it installs packages)" >&2
    exit 1
fi

# `make demo`: the shim, the tool and the libpq samples, and tests/demo.py (its own PostgreSQL 15).
# The shim compiles against libunwind's, uthash's and libdw's headers (libdw is dlopen'ed).
demo_packages=(
    gcc libc6-dev make pkg-config
    libunwind-dev uthash-dev libdw-dev
    libpq-dev postgresql
    python3
    libcjson-dev
)
# Everything else: `make test` (format check, unit tests with cmocka, ASan/UBSan, integration tests
# against PostgreSQL, Redis, MariaDB and the MongoDB wire server, libFuzzer with clang 14),
# `make bench`, the man page (scdoc), pyflakes, the report schema's checks (jsonschema), gdb
# (`leakshim attach` runs it; tests/integration/test_attach.py), chromium (the HTML report, headless),
# prometheus (promtool checks the metrics textfile), the web frameworks and pytest-xdist the
# test-suite and route tests drive.
# ca-certificates: npm fetches the MongoDB wire server over HTTPS.
test_packages=(
    build-essential binutils valgrind procps util-linux clang-format
    clang libclang-rt-14-dev
    libcmocka-dev scdoc groff-base man-db ca-certificates
    redis-server redis-tools libhiredis-dev
    mariadb-server mariadb-client libmariadb-dev
    libmongoc-dev libbson-dev
    python3-dev python3-pytest python3-psycopg2 python3-redis python3-pymongo
    python3-sqlalchemy python3-jsonschema python3-pyflakes
    chromium prometheus
    gdb
    python3-fastapi python3-starlette python3-uvicorn python3-flask python3-httpx
    python3-pytest-xdist gunicorn python3-motor python3-asyncpg python3-sqlmodel
    python3-psycopg python3-psycopg-pool
)

packages=("${demo_packages[@]}")
if [[ $set_name == test ]]; then
    packages+=("${test_packages[@]}")
    if ! command -v node >/dev/null; then
        packages+=(nodejs npm)
    elif ! command -v npm >/dev/null; then
        packages+=(npm)
    fi
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

apt_update() {
    local i
    for i in 1 2 3; do
        apt-get update -q && return 0
        [[ $i -eq 3 ]] && return 1
        sleep 10
    done
}

if [[ ${LEAKSHIM_APT_UPDATED:-} != 1 ]]; then
    step "apt-get update"
    apt_update
fi

step "apt-get install ($set_name set: ${#packages[@]} packages)"
# A failed download (a mirror hiccup, package lists gone stale) gets fresh lists and another go.
for i in 1 2 3; do
    apt-get install "${apt_opts[@]}" "${packages[@]}" && break
    [[ $i -eq 3 ]] && exit 1
    sleep 10
    apt_update
done

restore_policy
trap - EXIT

step "toolchain"
cc --version | head -n1
/usr/bin/python3 --version
if [[ $set_name == test ]]; then
    clang --version | head -n1
    node --version
    /usr/bin/python3 -m pytest --version

    step "mongo test server (tests/mongo/setup.sh)"
    bash tests/mongo/setup.sh
fi
