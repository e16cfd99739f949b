#!/usr/bin/env bash
# Puts on this machine what Berth needs, then builds it; does nothing that is already done.
# Debian packages (nats-server, runc, containerd's ctr and .proto files), pnpm, the
# dependencies exactly as pnpm-lock.yaml has them, and the TypeScript build.
set -euo pipefail
top=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$top"
say() { [ -n "${BERTH_QUIET:-}" ] || echo "setup: $*" >&2; }

packages=(nats-server runc containerd golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev
  golang-github-gogo-googleapis-dev libprotobuf-dev curl ca-certificates util-linux gcc libc6-dev zstd openssl)
# packages/native compiles against the running Node's own headers: nodesource's nodejs ships
# them beside the binary; Debian's node has them in libnode-dev.
node_inc="$(dirname "$(readlink -f "$(command -v node)")")/../include/node"
if [ ! -f "$node_inc/node_api.h" ] && [ ! -f /usr/include/node/node_api.h ]; then packages+=(libnode-dev); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: missing Debian packages (${missing[*]}); run as root or install them" >&2; exit 1; }
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  opts=(-y -q -o DPkg::Lock::Timeout=300 --no-install-recommends)
  if ! apt-get install "${opts[@]}" "${missing[@]}" >/tmp/berth-apt.log 2>&1; then
    apt-get update -q >>/tmp/berth-apt.log 2>&1 || true
    apt-get install "${opts[@]}" "${missing[@]}" >>/tmp/berth-apt.log 2>&1 ||
      { echo "setup: apt-get install failed:" >&2; tail -20 /tmp/berth-apt.log >&2; exit 1; }
  fi
fi
# Debian's containerd package starts its own daemon under systemd; Berth does not need it.
if command -v systemctl >/dev/null && systemctl is-active -q containerd 2>/dev/null; then
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi

want_pnpm=$(node -p "require('./package.json').packageManager.split('@')[1]")
if ! command -v pnpm >/dev/null || [ "$(pnpm --version 2>/dev/null)" != "$want_pnpm" ]; then
  say "installing pnpm $want_pnpm"
  npm install -g --silent "pnpm@$want_pnpm" >/tmp/berth-npm.log 2>&1 ||
    { echo "setup: npm install -g pnpm failed:" >&2; tail -20 /tmp/berth-npm.log >&2; exit 1; }
fi

stamp=node_modules/.berth-lock
if [ ! -f "$stamp" ] || ! cmp -s pnpm-lock.yaml "$stamp"; then
  say "pnpm install --frozen-lockfile"
  pnpm install --frozen-lockfile --reporter=silent
  cp pnpm-lock.yaml "$stamp"
fi

gen=packages/api/generated/containerd.json
if [ ! -f $gen ] || [ packages/api/scripts/gen.mjs -nt $gen ] || [ -n "$(find packages/api/proto -newer $gen -name '*.proto' | head -1)" ]; then
  say "generating the containerd API from Debian's .proto files"
  node packages/api/scripts/gen.mjs >/dev/null
fi
say "building"
packages/native/scripts/build.sh
node_modules/.bin/tsc -b
