#!/usr/bin/env bash
# Installs the npm packages exactly as package-lock.json has them (npm ci), and skips the work
# when node_modules already matches the lock file of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.stowage-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  echo "npm: node_modules matches package-lock.json"
  exit 0
fi
echo "npm: installing packages (npm ci)"
# zstd-napi compiles against Node's headers; with no registry for node-gyp to download them from,
# use the ones installed with Node when npm has not been told where they are.
if [[ -z $(npm config get nodedir 2>/dev/null | grep -v '^undefined$') && -f /usr/include/node/node.h ]]; then
  export npm_config_nodedir=/usr
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
