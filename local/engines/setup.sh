#!/usr/bin/env bash
# Prepares the Docker engine the tests and local mode use, on a fresh Debian 12 run as root
# (no systemd). Idempotent: every step checks first and says what it did or why it skipped.
#
#   1. the Debian packages (apt-get update only when something is missing)
#   2. a running dockerd answering GET /_ping on /var/run/docker.sock
#   3. the test image stowage-test/busybox:latest, imported from a busybox-static rootfs
#      (no registry is reachable here, so nothing can be pulled)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

SOCKET=/var/run/docker.sock
TEST_IMAGE=stowage-test/busybox:latest
# util-linux-extra: fincore, which the agent asks whether a file is in the page cache before it
# reads it (core/direct-io.ts). chromium: the web console's browser tests drive Debian's
# Chromium with playwright-core (no browser can be downloaded here).
# acl: setfacl, for the tree-stream test of POSIX ACLs (test/contract/tree-stream.test.ts).
PACKAGES=(docker.io busybox-static zstd xz-utils tar util-linux-extra chromium acl)
DOCKERD_LOG=/var/log/stowage-dockerd.log
# dockerd answers in under a second once started; 30 s covers a cold first start.
PING_TIMEOUT_S=30

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts dockerd)"

# --- 1. packages -----------------------------------------------------------------------------
install_packages "${PACKAGES[@]}"

# --- 2. dockerd ------------------------------------------------------------------------------
# The docker client in /usr/local/bin may be newer than Debian's daemon (API 1.41) and refuses
# to talk to it unless the API version is pinned; Debian's own client lives in /usr/bin.
export DOCKER_API_VERSION=1.41
if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi

ping_docker() {
  if command -v curl >/dev/null 2>&1; then
    [[ $(curl -s --max-time 2 --unix-socket "$SOCKET" http://localhost/_ping 2>/dev/null) == OK ]]
  else
    "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1
  fi
}

if ping_docker; then
  log "dockerd: already answering on $SOCKET"
else
  if command -v pgrep >/dev/null 2>&1 && pgrep -x dockerd >/dev/null 2>&1; then
    log "dockerd: a dockerd process exists but $SOCKET does not answer yet; waiting for it"
  else
    log "dockerd: starting (log in $DOCKERD_LOG)"
    # setsid: its own session, so it outlives whatever process group ran this script (a test
    # runner killing its children must not take the engine down with it).
    # From /: a daemon keeps its working directory, and one inside a checkout that is later removed
    # breaks (lxd's rsync of snapshots fails with getcwd: No such file or directory).
    (cd / && close_inherited_fds && exec setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null) &
  fi
  deadline=$((SECONDS + PING_TIMEOUT_S))
  until ping_docker; do
    ((SECONDS < deadline)) || die "dockerd did not answer on $SOCKET within ${PING_TIMEOUT_S}s; see $DOCKERD_LOG"
    sleep 0.2
  done
  log "dockerd: ready"
fi

# --- 3. the busybox test image ---------------------------------------------------------------
if "$DOCKER" image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
  log "image: $TEST_IMAGE already present"
else
  log "image: building $TEST_IMAGE from /bin/busybox"
  workdir=$(mktemp -d)
  trap 'rm -rf "$workdir"' EXIT
  rootfs=$workdir/rootfs
  build_busybox_rootfs "$rootfs"
  tar -C "$rootfs" --numeric-owner -c . | "$DOCKER" import -c 'CMD ["/bin/sh"]' - "$TEST_IMAGE" >/dev/null
  rm -rf "$workdir"
  trap - EXIT
  log "image: built $TEST_IMAGE"
fi

log "done"
bash "$(dirname "$0")/setup-lxd.sh"
bash "$(dirname "$0")/setup-vcsim.sh"
