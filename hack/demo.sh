#!/usr/bin/env bash
# The demo command (README): installs what it needs, then runs a local cluster end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
[ -x node_modules/.bin/node ] || npm ci --no-audit --no-fund --loglevel=error
exec node_modules/.bin/node hack/demo.ts
