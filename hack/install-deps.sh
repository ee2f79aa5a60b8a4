#!/usr/bin/env bash
# Installs the Debian packages the real-process harness runs (hack/harness/).
# Idempotent: only packages whose binary is missing are installed, with one
# `apt-get update` first. Silent when there is nothing to do or all went well;
# on failure prints apt's output and exits non-zero.
set -euo pipefail

# binary:package
NEEDED=(
  containerd:containerd
  ctr:containerd
  docker-registry:docker-registry
  skopeo:skopeo
  nginx:nginx-light
  htpasswd:apache2-utils
  ip:iproute2
  tc:iproute2
  openssl:openssl
  curl:curl
)

# Debian keeps some of these in sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
for entry in "${NEEDED[@]}"; do
  bin="${entry%%:*}"
  pkg="${entry#*:}"
  if ! command -v "$bin" >/dev/null 2>&1 && [[ " ${missing[*]-} " != *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
  exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
run() {
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "$@" >>"$log" 2>&1; then
    echo "install-deps: '$*' failed:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}
run apt-get update -q
run apt-get install -y -q --no-install-recommends "${missing[@]}"

for entry in "${NEEDED[@]}"; do
  bin="${entry%%:*}"
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "install-deps: '$bin' still missing after installing ${missing[*]}" >&2
    exit 1
  fi
done
