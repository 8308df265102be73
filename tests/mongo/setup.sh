#!/usr/bin/env bash
# Installs the MongoDB wire-compatible test server (CongoDB from @push.rocks/smartmongo) into
# tests/mongo/node_modules. Idempotent: does nothing when the pinned version is already there.
# Only the npm registry is needed. See tests/mongo/README.md for why it is done this way.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pkg_version="2.2.0"
dest="$here/node_modules/@push.rocks/smartmongo"
stamp="$dest/.leakshim-installed-$pkg_version"

if [[ -f "$stamp" ]] && (cd "$here" && node server.mjs --check >/dev/null 2>&1); then
    echo "tests/mongo: smartmongo $pkg_version already installed"
    exit 0
fi

command -v node >/dev/null || { echo "tests/mongo/setup.sh: node is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "tests/mongo/setup.sh: npm is not installed" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "tests/mongo: fetching @push.rocks/smartmongo@$pkg_version"
(cd "$tmp" && npm pack --silent "@push.rocks/smartmongo@$pkg_version" >/dev/null)
mkdir -p "$tmp/unpack"
tar -xzf "$tmp"/push.rocks-smartmongo-"$pkg_version".tgz -C "$tmp/unpack"

# Keep only what the wire server (dist_ts/congodb) imports, pinned to versions verified to work.
# The package's full dependency list (smartdata, mongodump, mongodb-memory-server) is for its
# other half (which downloads a real mongod binary) and does not resolve/install here.
node - "$tmp/unpack/package/package.json" <<'JS'
const fs = require('fs');
const f = process.argv[2];
const p = JSON.parse(fs.readFileSync(f, 'utf8'));
delete p.devDependencies;
delete p.scripts;
delete p.packageManager;
delete p.pnpm;
p.dependencies = {
  '@push.rocks/smartfs': '1.5.0',
  '@push.rocks/smartpath': '5.1.0',
  '@push.rocks/smartpromise': '4.2.3',
  '@push.rocks/smartrx': '3.0.10',
  'bson': '6.10.4',
  'mingo': '7.2.7',
};
fs.writeFileSync(f, JSON.stringify(p, null, 2) + '\n');
JS

echo "tests/mongo: installing its dependencies"
(cd "$tmp/unpack/package" && npm install --ignore-scripts --omit=dev --no-audit --no-fund \
    --loglevel=error >/dev/null)

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp/unpack/package" "$dest"
touch "$stamp"

(cd "$here" && node server.mjs --check)
echo "tests/mongo: ready (node server.mjs PORT)"
