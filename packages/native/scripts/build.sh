#!/usr/bin/env bash
# Compiles src/native.c into build/berth_native.node with gcc against the running Node's own
# headers (Node-API and libuv): no node-gyp, nothing downloaded. Does nothing when the addon is
# newer than its source and this script. NODE_INCLUDE overrides where the headers are.
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
src=$here/src/native.c
out=$here/build/berth_native.node
if [ -f "$out" ] && [ "$out" -nt "$src" ] && [ "$out" -nt "${BASH_SOURCE[0]}" ]; then exit 0; fi

# Where the headers are: beside the node binary (nodesource, official tarballs, nvm), or
# Debian's libnode-dev layout. libuv may be Node's copy or the system's (libuv1-dev).
node_bin=$(readlink -f "$(command -v node)")
dirs=("${NODE_INCLUDE:-}" "$(dirname "$node_bin")/../include/node" /usr/include/node /usr/local/include/node)
inc=
for d in "${dirs[@]}"; do
  [ -n "$d" ] && [ -f "$d/node_api.h" ] && { inc=$(readlink -f "$d"); break; }
done
[ -n "$inc" ] || { echo "native: Node-API headers (node_api.h) not found; set NODE_INCLUDE" >&2; exit 1; }
flags=(-I"$inc")
if [ ! -f "$inc/uv.h" ]; then
  [ -f /usr/include/uv.h ] || { echo "native: uv.h not found (libuv1-dev)" >&2; exit 1; }
fi
cc=${CC:-gcc}
command -v "$cc" >/dev/null || { echo "native: $cc not found (gcc, libc6-dev)" >&2; exit 1; }

mkdir -p "$here/build"
# Node resolves the napi_* and uv_* symbols itself when it loads the addon: leave them undefined.
"$cc" -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -shared -fPIC -pthread -fvisibility=hidden \
  "${flags[@]}" -o "$out.$$.tmp" "$src"
mv -f "$out.$$.tmp" "$out"  # atomic: a concurrent build or load never sees half a file
