# Sourced by the engine set-up scripts (each defines `log` first): installing Debian packages,
# and the busybox test rootfs the Docker and LXD test images share (no registry is reachable
# here, so the images are made from Debian's busybox-static).

# install_packages PKG...: installs the packages that are missing. The package lists are
# refreshed only when the cached ones cannot install them.
install_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    # dpkg-query prints only the status: `dpkg -s | grep -q` under pipefail failed when grep
    # quit before dpkg had written the rest (SIGPIPE), so a package such as docker.io, whose
    # record is 8 KB, counted as missing about one time in four.
    if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != 'install ok installed' ]]; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    log "packages: all present ($*)"
    return
  fi
  log "packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  log "packages: installed ${missing[*]}"
}

# close_inherited_fds: closes every file descriptor above 2 of the calling (sub)shell, before it
# execs a daemon. A command run under `flock FILE ...` (the shared engine lock) hands the lock's
# descriptor to everything it starts: a daemon that inherits it holds the lock for as long as it
# runs. An lxd restarted that way kept /tmp/stowage-engines.lock locked for every session after.
close_inherited_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    if ((fd > 2)); then eval "exec $fd>&-"; fi
  done
  return 0
}

# build_busybox_rootfs DIR: a minimal root file system in DIR (created), with users root and
# app (1000) and an inittab whose init stays up (an LXD container stops at once without one).
build_busybox_rootfs() {
  local rootfs=$1
  mkdir -p "$rootfs"
  (
    cd "$rootfs"
    mkdir -p bin sbin usr/bin usr/sbin etc root tmp dev proc sys run var mnt home/app
    chmod 1777 tmp
    chmod 700 root
    cp /bin/busybox bin/busybox
    # Absolute links to /bin/busybox: busybox picks the applet from argv[0].
    /bin/busybox --list-full | while read -r applet; do
      [[ $applet == bin/busybox ]] && continue
      ln -sf /bin/busybox "$applet"
    done
    cat >etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
PASSWD
    cat >etc/group <<'GROUP'
root:x:0:
app:x:1000:
GROUP
    cat >etc/inittab <<'INITTAB'
::sysinit:/bin/true
::respawn:/bin/sleep 100000
INITTAB
    chown 1000:1000 home/app
  )
}
