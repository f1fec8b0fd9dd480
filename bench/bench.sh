#!/usr/bin/env bash
# make bench / make bench-quick: builds the release binaries and the bench, then runs it.
# Peers it measures, installed if missing: dnsperf, dnsmasq, dnsname (Debian 12's); Docker
# 28.5 and aardvark-dns 1.17 from Debian's newer suites (test-cni/newer/fetch.sh peers, cached;
# dockerd runs with Debian 12's runc); etcd for the multi-host phase.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make bench needs root (network namespaces, iptables)"; exit 1; }
missing=""
for p in dnsperf dnsmasq-base golang-github-containernetworking-plugin-dnsname runc busybox-static etcd-server etcd-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
./test-cni/newer/fetch.sh peers
cargo build --release --locked --bins -p embedns -p embedns-resolverd -p embedns-sync -p embedns-bench
export EMBEDNS_BIN_DIR="$PWD/target/release" EMBEDNS_CNITOOL="$PWD/test-cni/cnitool/bin/cnitool"

# Interrupted, the bench cannot unwind into its own cleanup: remove what its world made.
# Its world lives in a private TMPDIR, and everything it creates is named after that
# world's dir (embedns-test-<id>), so nothing of another run is touched.
export TMPDIR
TMPDIR=$(mktemp -d /tmp/embedns-bench.XXXXXX)
# The state dir on a tmpfs, as /run (embedns's default dataDir) is on a host. This VM's root
# file system is ext4 without a journal, whose inode allocator skips every inode freed in the
# last 30 s (recently_deleted()): file creation there slows as a run goes on, whatever embedns
# does (measured: ADD 6.5 ms rising to 10-13 ms on it, flat on tmpfs). BENCH_DISK=1 keeps /tmp.
if [ "${BENCH_DISK:-0}" != 1 ]; then
  mount -t tmpfs -o size=4g,mode=0711 embedns-bench "$TMPDIR"
fi
interrupted() {
  trap - INT TERM
  kill -KILL "$bench" 2>/dev/null || true
  for dir in "$TMPDIR"/embedns-test-*; do
    [ -e "$dir" ] || continue
    id=${dir#"$TMPDIR"/embedns-test-}
    [ -f "$dir/docker/pid" ] && kill "$(cat "$dir/docker/pid")" 2>/dev/null
    pkill -KILL -f "$dir" 2>/dev/null || true
    pkill -KILL -f "target/release/trivial-responder" 2>/dev/null || true
    for ns in $(ip netns list | awk '{print $1}' | grep "^$id-"); do ip netns del "$ns"; rm -rf "/etc/netns/$ns"; done
    mount | awk '{print $3}' | grep "^$dir" | sort -r | xargs -r umount -l
    rm -rf "$dir"
  done
  umount -l "$TMPDIR" 2>/dev/null || true
  rm -rf "$TMPDIR"
  exit 130
}
target/release/embedns-bench &
bench=$!
trap interrupted INT TERM
status=0
wait "$bench" || status=$?
umount "$TMPDIR" 2>/dev/null || true
rmdir "$TMPDIR" 2>/dev/null || true
exit "$status"
