#!/usr/bin/env bash
# The benchmark command (`npm run bench`, README): installs what it needs like
# hack/test.sh, then runs hack/bench/main.ts on the npm-installed Node 24.
# Prints a table with each target's PASS/MISS and writes every raw sample to a
# JSON file; exits non-zero only if the bench could not run or a server
# answered wrong. Tunable through BENCH_* variables (see hack/bench/main.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

echo "==> installing Debian packages (containerd, docker-registry, skopeo, nginx-light)"
bash hack/install-deps.sh
if ! command -v curl >/dev/null 2>&1; then
  # The throughput client; present on most machines, not in install-deps.sh's list.
  [[ $(id -u) -eq 0 ]] || { echo "bench: curl is missing; install it (apt-get install curl)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl >/dev/null
fi

if [[ ! -d node_modules ]]; then
  echo "==> installing npm dependencies (Node 24 comes with them)"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "==> bench"
exec node_modules/.bin/node hack/bench/main.ts "$@"
