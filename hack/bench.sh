#!/usr/bin/env bash
# The benchmark command (`npm run bench`, README): installs what it needs like
# hack/test.sh, then runs hack/bench/main.ts on the npm-installed Node 24.
# Part 1 (one node: GET, HEAD, RSS), part 2 (peer network: DHT lookups,
# pulls from peers, RSS with thousands of advertised digests) and part 3
# (upstream fallback: a rollout of a new image through a throttled upstream;
# needs root for ip netns and tc); some of them alone with
# `npm run bench -- --only local,peers,upstream` or BENCH_ONLY=... .
# Prints tables with each target's PASS/MISS and writes every raw sample to a
# JSON file; exits non-zero only if the bench could not run or a server
# answered wrong. Tunable through BENCH_* variables (see hack/bench/main.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

echo "==> installing Debian packages (containerd, docker-registry, skopeo, nginx-light)"
bash hack/install-deps.sh

if [[ ! -d node_modules ]]; then
  echo "==> installing npm dependencies (Node 24 comes with them)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# BENCH_ONLY=local|peers|upstream runs mirror parts only; =webhook only the webhook's.
status=0
if [[ "${BENCH_ONLY:-}" != webhook ]]; then
  echo "==> bench: mirror"
  node_modules/.bin/node hack/bench/main.ts "$@" || status=$?
fi
if [[ -z "${BENCH_ONLY:-}" || "${BENCH_ONLY:-}" == webhook ]]; then
  echo "==> bench: webhook"
  node_modules/.bin/node hack/bench/webhook/main.ts || status=$?
fi
exit "$status"
