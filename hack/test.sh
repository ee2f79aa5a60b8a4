#!/usr/bin/env bash
# The test command (README, CI): installs what it needs, then type-check, lint,
# unit tests and end-to-end tests against real processes. Ends with the line
# `N passed, N failed` (type-check and lint count as one check each).
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
finish() {
  echo
  echo "${passed} passed, ${failed} failed"
  [ "$failed" -eq 0 ]
  exit $?
}

step() { echo; echo "==> $*"; }

step "installing Debian packages (containerd, docker-registry, skopeo, nginx-light)"
if ! bash hack/install-deps.sh; then failed=$((failed + 1)); finish; fi

step "installing npm dependencies (Node 24 comes with them)"
if ! npm ci --no-audit --no-fund --loglevel=error; then failed=$((failed + 1)); finish; fi
export PATH="$PWD/node_modules/.bin:$PATH"
echo "node $(node --version)"

step "type-check: tsc --noEmit"
if tsc --noEmit; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

step "lint: eslint --max-warnings 0"
if eslint --max-warnings 0 .; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

step "unit and end-to-end tests (mocha)"
counts=$(mktemp)
SHOAL_TEST_COUNTS="$counts" mocha --forbid-only --forbid-pending --reporter hack/count-reporter.cjs \
  'shared/**/*.test.ts' 'mirror/**/*.test.ts' 'webhook/**/*.test.ts' 'manifests/**/*.test.ts' 'hack/**/*.test.ts'
status=$?
if [ -s "$counts" ]; then
  read -r p f pending < <(node -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(s.passes, s.failures, s.pending)' "$counts")
  passed=$((passed + p))
  failed=$((failed + f + pending))
fi
# Mocha failing without a failed test (a crash, a bad file) still fails the run.
if [ "$status" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
rm -f "$counts"
finish
