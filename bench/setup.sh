#!/usr/bin/env bash
# Installs the benchmark's peers and its timer from Debian: restic, BorgBackup and GNU time
# (for `/usr/bin/time -v`, the peak RSS of each step). Idempotent: installs only what is missing,
# and refreshes the package lists only then. Run as root (the project's machines are).
set -euo pipefail

missing=()
command -v restic >/dev/null 2>&1 || missing+=(restic)
command -v borg >/dev/null 2>&1 || missing+=(borgbackup)
[ -x /usr/bin/time ] || missing+=(time)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/setup.sh: missing ${missing[*]}; run as root to install them with apt-get" >&2
  exit 1
fi

echo "bench/setup.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
