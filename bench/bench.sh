#!/usr/bin/env bash
# make bench / make bench-quick: builds the release binaries and the bench, then runs it.
# Peers it measures, installed if missing: dnsperf, aardvark-dns, dnsmasq, dnsname, Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make bench needs root (network namespaces, iptables)"; exit 1; }
missing=""
for p in dnsperf aardvark-dns dnsmasq-base golang-github-containernetworking-plugin-dnsname docker.io; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
cargo build --release --locked --bins -p embedns -p embedns-resolverd -p embedns-bench
export EMBEDNS_BIN_DIR="$PWD/target/release" EMBEDNS_CNITOOL="$PWD/test-cni/cnitool/bin/cnitool"
exec target/release/embedns-bench
