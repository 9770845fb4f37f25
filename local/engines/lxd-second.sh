#!/usr/bin/env bash
# A second, throw-away LXD daemon beside the main one, for tests that need a FRESH server (the
# whole-server restore, disaster recovery): its own LXD_DIR, database, socket and storage.
#
#   local/engines/lxd-second.sh start DIR   starts `lxd` with LXD_DIR=DIR (socket DIR/unix.socket,
#                                           log DIR.log) and waits until it answers; nothing else:
#                                           no pool, no profile device, no network, no image
#   local/engines/lxd-second.sh stop DIR    `lxd shutdown` (stops its instances), unmounts what it
#                                           left mounted under DIR, removes DIR and DIR.log
#   local/engines/lxd-second.sh stop-keep-storage DIR
#                                           a disaster for recovery tests: shuts it down and
#                                           deletes its database only (DIR/database), so a
#                                           `start` finds storage it has no record of
#
# Both daemons coexist: each has its own socket and state, and LXD names an instance's cgroup and
# AppArmor profile after its own directory, so even the same instance name runs in both. The
# second daemon listens on no TCP port and creates no network. Needs what setup-lxd.sh installs
# (Debian 12's lxd package); run as root.
set -euo pipefail

READY_TIMEOUT_S=60
SHUTDOWN_TIMEOUT_S=60

log() { printf 'lxd-second: %s\n' "$*"; }
die() { printf 'lxd-second: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

[[ $# -eq 2 ]] || die "usage: $0 start|stop|stop-keep-storage DIR"
action=$1
dir=$2
[[ $dir == /* ]] || die "DIR must be an absolute path (got $dir)"
[[ $dir != /var/lib/lxd && $dir != /var/lib/lxd/ ]] || die "DIR must not be the main daemon's /var/lib/lxd"
[[ $(id -u) -eq 0 ]] || die "run as root (lxd needs it)"
command -v lxd >/dev/null || die "lxd is not installed; run local/engines/setup-lxd.sh first"

case $action in
start)
  if [[ -S $dir/unix.socket ]] && LXD_DIR=$dir lxd waitready --timeout 2 2>/dev/null; then
    log "already answering on $dir/unix.socket"
    exit 0
  fi
  mkdir -p "$dir"
  chmod 711 "$dir"
  log "starting lxd with LXD_DIR=$dir (log in $dir.log)"
  # setsid: its own session, so a test runner killing its process group leaves it to `stop`.
  # From /: see setup-lxd.sh (a daemon whose working directory is removed breaks).
  (cd / && close_inherited_fds && LXD_DIR=$dir exec setsid nohup lxd --group root --logfile "$dir.log" >/dev/null 2>&1 </dev/null) &
  LXD_DIR=$dir lxd waitready --timeout "$READY_TIMEOUT_S" ||
    die "lxd in $dir was not ready within ${READY_TIMEOUT_S}s; see $dir.log"
  log "ready on $dir/unix.socket"
  ;;
stop | stop-keep-storage)
  if [[ -S $dir/unix.socket ]]; then
    log "shutting down lxd in $dir"
    LXD_DIR=$dir timeout $((SHUTDOWN_TIMEOUT_S + 10)) lxd shutdown --timeout "$SHUTDOWN_TIMEOUT_S" ||
      log "lxd shutdown in $dir failed or timed out; going on with the clean-up"
  fi
  if [[ $action == stop-keep-storage ]]; then
    rm -rf "$dir/database"
    log "deleted the database of $dir; its storage stays"
    exit 0
  fi
  # Anything it left mounted under DIR (its shmounts and devlxd tmpfs), deepest first.
  if command -v findmnt >/dev/null; then
    mounts=$(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r || true)
    while IFS= read -r mnt; do
      [[ -n $mnt ]] || continue
      umount -l "$mnt" || log "could not unmount $mnt"
    done <<<"$mounts"
  fi
  rm -rf "$dir" "$dir.log"
  log "removed $dir"
  ;;
*)
  die "unknown action $action (start or stop)"
  ;;
esac
