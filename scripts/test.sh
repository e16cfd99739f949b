#!/usr/bin/env bash
# The whole test suite: unit tests of every package and service, then the integration tests
# that start the real stack (own nats-server, every service as a process) and drive it with the
# real ctr, beside the reference containerd. Node's test runner prints the summary.
set -euo pipefail
top=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$top"
"$top/scripts/setup.sh"
mapfile -t files < <(find packages services shim test -path '*/node_modules' -prune -o -path '*/dist/*' -name '*.test.js' -print | sort)
[ ${#files[@]} -gt 0 ] || { echo "test: no test files found" >&2; exit 1; }
exec node --test --test-reporter=spec --test-concurrency=1 "${files[@]}"
