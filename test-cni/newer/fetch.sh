#!/bin/sh
# The runtimes users run now, from Debian's newer suites, for the tests (../README.md, "Supported
# runtimes"): containerd 2.x, etcd 3.5, CNI plugins 1.9 and a cnitool built against libcni 1.3.
# A private apt state (the machine's own apt is untouched), cached in $EMBEDNS_NEWER
# (default ${XDG_CACHE_HOME:-$HOME/.cache}/embedns-newer); a second run does nothing.
# Afterwards: $EMBEDNS_NEWER/root/usr/bin/{containerd,etcd,...}, root/usr/lib/cni/*,
# and $EMBEDNS_NEWER/cnitool-libcni13.
# `fetch.sh peers` (make bench) fetches today's peers instead: Docker 28 (dockerd, docker,
# docker-init) and aardvark-dns 1.17 into $EMBEDNS_NEWER/peers, beside sid's containerd 2.x
# in root/ that dockerd 28 runs as its private containerd.
set -eu
C=${EMBEDNS_NEWER:-${XDG_CACHE_HOME:-$HOME/.cache}/embedns-newer}
HERE=$(cd "$(dirname "$0")" && pwd)
SUITES='trixie sid'
mkdir -p "$C"

# unpack DIR PACKAGE...: downloads the packages from the newer suites into $C/debs/DIR and
# unpacks them into $C/DIR, once (the private apt state is shared by both sets).
unpack() {
  dir=$1; shift
  [ -e "$C/$dir/.done" ] && return 0
  mkdir -p "$C/lists/partial" "$C/cache/archives/partial" "$C/debs/$dir"
  for s in $SUITES; do echo "deb http://deb.debian.org/debian $s main"; done > "$C/sources.list"
  # sid's Release file can be past its Valid-Until date.
  O="-o Dir::Etc::sourcelist=$C/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::Lists=$C/lists \
     -o Dir::Cache=$C/cache -o Acquire::Check-Valid-Until=false -o Dir::State::status=/var/lib/dpkg/status"
  # shellcheck disable=SC2086
  apt-get $O -q update
  rm -f "$C/debs/$dir"/*.deb
  # shellcheck disable=SC2086
  (cd "$C/debs/$dir" && apt-get $O -q download "$@")
  rm -rf "${C:?}/$dir"; mkdir -p "$C/$dir"
  for d in "$C/debs/$dir"/*.deb; do dpkg -x "$d" "$C/$dir"; done
  touch "$C/$dir/.done"
}

# sid's containerd (2.x), etcd (3.5) and plugins (1.9) run on Debian 12; its runc does not
# (glibc 2.38), so Debian 12's runc stays.
unpack root containerd etcd-server etcd-client containernetworking-plugins

if [ "${1:-}" = peers ]; then
  # Docker 28.5 (with Debian 12's runc and root/'s containerd) and aardvark-dns 1.17 run on
  # Debian 12 as they are (glibc <= 2.34).
  unpack peers docker.io docker-cli tini-static aardvark-dns
  "$C/peers/usr/sbin/dockerd" --version
  "$C/peers/usr/lib/podman/aardvark-dns" --version
  exit 0
fi

# cnitool against libcni 1.3 (GCNetworkList, GetStatusNetworkList): built in a sid root, since
# Debian 12's golang-github-appc-cni-dev is libcni 1.1. Static, so it runs on the host.
SRC=$HERE/../cnitool/src/embedns.test/cnitool
if [ ! -x "$C/cnitool-libcni13" ] || [ "$SRC/main.go" -nt "$C/cnitool-libcni13" ] || [ "$SRC/verbs13.go" -nt "$C/cnitool-libcni13" ]; then
  if [ ! -e "$C/sid/.done" ]; then
    rm -rf "$C/sid"
    mmdebstrap --quiet --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
      --include=golang-go,golang-github-appc-cni-dev sid "$C/sid" http://deb.debian.org/debian
    touch "$C/sid/.done"
  fi
  rm -rf "$C/sid/build"; mkdir -p "$C/sid/build/src/embedns.test/cnitool"
  cp "$SRC"/*.go "$C/sid/build/src/embedns.test/cnitool/"
  mount --bind /proc "$C/sid/proc"; mount --bind /dev "$C/sid/dev"
  rc=0
  chroot "$C/sid" sh -c 'cd /build && GO111MODULE=off GOROOT=/usr/lib/go GOPATH=/build:/usr/share/gocode \
    GOCACHE=/build/.cache GOTELEMETRY=off CGO_ENABLED=0 go build -tags libcni13 -o /build/cnitool embedns.test/cnitool' || rc=$?
  umount "$C/sid/proc" "$C/sid/dev"
  [ $rc = 0 ]
  mv "$C/sid/build/cnitool" "$C/cnitool-libcni13"
fi
"$C/root/usr/bin/containerd" --version
"$C/root/usr/bin/etcd" --version | head -1
echo "cnitool-libcni13: $C/cnitool-libcni13"
