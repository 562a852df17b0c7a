#!/usr/bin/env bash
# buf (the proto linter) comes from the npm registry, so `make test` needs node and npm.
set -euo pipefail
if command -v npx >/dev/null; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "==> installing nodejs and npm with apt-get (for buf)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
  exit 0
fi
echo "npx not found: install Node.js (for buf lint)" >&2
exit 1
