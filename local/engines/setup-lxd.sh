#!/usr/bin/env bash
# Prepares the LXD engine the tests and local mode use, on a fresh Debian 12 run as root (no
# systemd). Idempotent: every step checks first and says what it did or why it skipped.
#
#   1. the Debian packages (apt-get update only when something is missing)
#   2. a running `lxd --group root` answering on /var/lib/lxd/unix.socket
#   3. `lxd init --preseed`: a `dir` storage pool `default` and a default profile holding only the
#      root disk (`lxd init --auto` fails here: it wants a bridge and finds no free subnet)
#   4. the test image alias stowage-test/busybox, imported from a busybox-static rootfs (no image
#      server is reachable here, so nothing can be pulled)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

SOCKET=/var/lib/lxd/unix.socket
TEST_ALIAS=stowage-test/busybox
# btrfs-progs: mkfs.btrfs, for the btrfs pool of test/contract/lxd-btrfs.test.ts (a loop file LXD makes).
PACKAGES=(lxd busybox-static tar btrfs-progs)
LXD_LOG=/var/log/stowage-lxd.log
# lxd answers in about a second once started; 60 s covers a cold first start (database creation).
READY_TIMEOUT_S=60

log() { printf 'setup-lxd: %s\n' "$*"; }
die() { printf 'setup-lxd: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts lxd)"

# --- 1. packages -----------------------------------------------------------------------------
install_packages "${PACKAGES[@]}"

# --- 2. lxd ----------------------------------------------------------------------------------
lxd_answers() {
  curl -s --max-time 2 --unix-socket "$SOCKET" -o /dev/null -w '%{http_code}' http://lxd/1.0 2>/dev/null |
    grep -q '^200$'
}

if lxd_answers; then
  log "lxd: already answering on $SOCKET"
else
  if command -v pgrep >/dev/null 2>&1 && pgrep -x lxd >/dev/null 2>&1; then
    log "lxd: an lxd process exists but $SOCKET does not answer yet; waiting for it"
  else
    log "lxd: starting (log in $LXD_LOG)"
    # setsid: its own session, so it outlives whatever process group ran this script (a test
    # runner killing its children must not take the engine down with it).
    # From /: a daemon keeps its working directory, and one inside a checkout that is later removed
    # breaks (lxd's rsync of snapshots fails with getcwd: No such file or directory).
    (cd / && close_inherited_fds && exec setsid nohup lxd --group root >"$LXD_LOG" 2>&1 </dev/null) &
  fi
  lxd waitready --timeout "$READY_TIMEOUT_S" || die "lxd was not ready within ${READY_TIMEOUT_S}s; see $LXD_LOG"
  log "lxd: ready"
fi

# --- 3. storage pool and default profile ------------------------------------------------------
if lxc storage show default >/dev/null 2>&1; then
  log "init: storage pool default already present"
else
  log "init: preseeding a dir pool 'default' and a default profile with only the root disk"
  lxd init --preseed <<'EOF'
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
EOF
  log "init: done"
fi

# --- 4. the busybox test image ---------------------------------------------------------------
if lxc image show "$TEST_ALIAS" >/dev/null 2>&1; then
  log "image: $TEST_ALIAS already present"
else
  log "image: building $TEST_ALIAS from /bin/busybox"
  workdir=$(mktemp -d)
  trap 'rm -rf "$workdir"' EXIT
  rootfs=$workdir/rootfs
  build_busybox_rootfs "$rootfs"
  cat >"$workdir/metadata.yaml" <<EOF
architecture: x86_64
creation_date: $(date +%s)
properties:
  description: Stowage test image (busybox-static)
  os: busybox
  release: stowage
EOF
  tar -C "$workdir" --numeric-owner -cf "$workdir/image.tar" metadata.yaml rootfs
  lxc image import "$workdir/image.tar" --alias "$TEST_ALIAS" >/dev/null
  rm -rf "$workdir"
  trap - EXIT
  log "image: imported $TEST_ALIAS"
fi

log "done"
