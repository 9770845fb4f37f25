#!/usr/bin/env bash
# VMware's vSphere simulator for the tests and local mode, built from Debian's govmomi sources
# (local/engines/vcsim/main.go). Idempotent; run as root on Debian 12.
#
#   setup-vcsim.sh         install the packages, build the binary if it is missing or stale, and
#                          start the shared instance local mode can use (plain HTTP on
#                          127.0.0.1:$VCSIM_PORT, user `stowage`, the password in
#                          $STATE_DIR/password, the SDK URL in $STATE_DIR/url)
#   setup-vcsim.sh build   only the packages and the binary (what the tests need: each test
#                          starts its own instance on a free port)
#
# The binary is cached in $CACHE_DIR with a stamp of its sources (main.go, the govmomi package's
# version, the Go version), so it is built once (~40 s on 2 cores) and again only when one changes.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

SRC_DIR=$(cd "$(dirname "$0")/vcsim" && pwd)
CACHE_DIR=${STOWAGE_VCSIM_CACHE:-/var/cache/stowage/vcsim}
BIN=$CACHE_DIR/stowage-vcsim
STATE_DIR=/var/lib/stowage/vcsim
VCSIM_PORT=${STOWAGE_VCSIM_PORT:-8989}
VCSIM_LOG=/var/log/stowage-vcsim.log
PACKAGES=(golang-go golang-github-vmware-govmomi-dev)

log() { printf 'setup-vcsim: %s\n' "$*"; }
die() { printf 'setup-vcsim: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages)"

install_packages "${PACKAGES[@]}"

stamp() {
  {
    sha256sum <"$SRC_DIR/main.go"
    dpkg-query -W -f '${Version}\n' golang-github-vmware-govmomi-dev
    go version
  } | sha256sum | cut -d' ' -f1
}

want=$(stamp)
if [[ -x $BIN && -f $BIN.stamp && $(cat "$BIN.stamp") == "$want" ]]; then
  log "binary: $BIN is up to date"
else
  log "binary: building $BIN from $SRC_DIR (Debian's govmomi sources)"
  mkdir -p "$CACHE_DIR"
  # A private GOCACHE: root's home cache may not exist or be writable on a CI machine.
  # From the source directory: GOPATH mode builds `.`, not an absolute path.
  (cd "$SRC_DIR" && GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE=$CACHE_DIR/gocache \
    go build -o "$BIN.new" .)
  mv "$BIN.new" "$BIN"
  echo "$want" >"$BIN.stamp"
  log "binary: built"
fi

[[ ${1:-} == build ]] && exit 0

# --- the shared instance (local mode) ---------------------------------------------------------
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"
if [[ ! -s $STATE_DIR/password ]]; then
  (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE_DIR/password")
fi
if [[ -f $STATE_DIR/pid ]] && kill -0 "$(cat "$STATE_DIR/pid")" 2>/dev/null; then
  log "simulator: already running ($(cat "$STATE_DIR/url" 2>/dev/null))"
  exit 0
fi
rm -f "$STATE_DIR/url"
log "simulator: starting on 127.0.0.1:$VCSIM_PORT (log in $VCSIM_LOG)"
# setsid and from /: as dockerd, it must outlive the process group that ran this script.
(cd / && close_inherited_fds && exec setsid nohup "$BIN" -listen "127.0.0.1:$VCSIM_PORT" -user stowage \
  -password-file "$STATE_DIR/password" -url-file "$STATE_DIR/url" >"$VCSIM_LOG" 2>&1 </dev/null) &
echo $! >"$STATE_DIR/pid"
deadline=$((SECONDS + 30))
until [[ -s $STATE_DIR/url ]]; do
  kill -0 "$(cat "$STATE_DIR/pid")" 2>/dev/null || die "the simulator exited; see $VCSIM_LOG"
  ((SECONDS < deadline)) || die "the simulator did not start within 30 s; see $VCSIM_LOG"
  sleep 0.2
done
log "simulator: ready at $(cat "$STATE_DIR/url") (user stowage, password file $STATE_DIR/password)"
