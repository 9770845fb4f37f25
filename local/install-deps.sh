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
npm ci --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
