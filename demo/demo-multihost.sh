#!/usr/bin/env bash
# make demo-multihost: one network spanning three "hosts" (network namespaces joined by an
# underlay bridge, one etcd member each), a container on each, names answered across hosts,
# then a host killed and its names gone from the others within the lease's bound. Everything
# lives in namespaces and a temp dir made here, removed at the end. Exits non-zero if an
# answer is wrong.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/demo/common.sh"
CHECK_W1=50 CHECK_W2=22
bin="$here/target/release"
cnitool="$here/test-cni/cnitool/bin/cnitool"
[ "$(id -u)" = 0 ] || { echo "make demo-multihost needs root (network namespaces, iptables)"; exit 1; }
for f in "$bin/embedns" "$bin/embedns-resolverd" "$bin/embedns-syncd" "$cnitool" /usr/bin/etcd; do
  [ -x "$f" ] || { echo "missing $f: run 'make demo-multihost' (it installs and builds everything)"; exit 1; }
done

id="mh$$"
tmp=$(mktemp -d /tmp/embedns-demo-mh.XXXXXX)
chmod 0711 "$tmp"
ttl=6
failed=0
names=(web db cli)

cleanup() {
  set +e
  for h in 1 2 3; do
    pkill -KILL -f "embedns-(resolverd|syncd) --data-dir $tmp/h$h/" 2>/dev/null
    pkill -KILL -f "etcd --name m$h --data-dir $tmp/h$h/etcd" 2>/dev/null
    ip netns del "$id-c$h" 2>/dev/null
    rm -rf "/etc/netns/$id-c$h"
    ip netns del "$id-h$h" 2>/dev/null
  done
  ip netns del "$id-u" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

on()   { local h=$1; shift; ip netns exec "$id-h$h" "$@"; }
cni()  { # host verb container [env...]
  local h=$1 verb=$2 c=$3; shift 3
  on "$h" env NETCONFPATH="$tmp/h$h/net.d" CNI_PATH="$tmp/bin" CNI_CACHE_DIR="$tmp/h$h/cache" \
    "$@" "$cnitool" "$verb" shared "/run/netns/$id-c$c"
}
dig_in() { local c=$1; shift; dig_ns "$id-c$c" "$@"; }

say "1. Three hosts (netns $id-h1..3) on an underlay bridge, 10.99.0.1-3, one etcd member each"
mkdir -p "$tmp/bin"
ln -s /usr/lib/cni/bridge /usr/lib/cni/host-local "$bin/embedns" "$bin/embedns-resolverd" "$bin/embedns-syncd" "$tmp/bin/"
ip netns add "$id-u"
ip -n "$id-u" link add br0 type bridge
ip -n "$id-u" link set br0 up
cluster="m1=http://10.99.0.1:2380,m2=http://10.99.0.2:2380,m3=http://10.99.0.3:2380"
for h in 1 2 3; do
  mkdir -p "$tmp/h$h/net.d" "$tmp/h$h/cache"
  ip netns add "$id-h$h"
  on "$h" ip link set lo up
  ip -n "$id-h$h" link add u0 type veth peer name "h$h" netns "$id-u"
  ip -n "$id-h$h" addr add "10.99.0.$h/24" dev u0
  ip -n "$id-h$h" link set u0 up
  ip -n "$id-u" link set "h$h" master br0 up
  ip netns exec "$id-h$h" etcd --name "m$h" --data-dir "$tmp/h$h/etcd" \
    --listen-client-urls "http://10.99.0.$h:2379,http://127.0.0.1:2379" --advertise-client-urls "http://10.99.0.$h:2379" \
    --listen-peer-urls "http://10.99.0.$h:2380" --initial-advertise-peer-urls "http://10.99.0.$h:2380" \
    --initial-cluster "$cluster" --initial-cluster-token "$id" --initial-cluster-state new \
    >"$tmp/h$h/etcd.log" 2>&1 &
  disown
  printf 'nameserver 127.0.0.53\n' >"$tmp/h$h/resolv.conf"
done
# Until the cluster serves (each try is an etcdctl run with a 1 s timeout; 300 at most).
for _ in $(seq 300); do
  on 1 env ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 --command-timeout=1s endpoint health >/dev/null 2>&1 && break
done
on 1 env ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 member list | sed 's/^/  etcd member: /'

say "2. One network, 'shared', on every host: each host's slice of 10.77.0.0/16, and the etcd key"
for h in 1 2 3; do
  others=$(for o in 1 2 3; do if [ "$o" != "$h" ]; then printf ', "http://10.99.0.%s:2379"' "$o"; fi; done)
  cat >"$tmp/h$h/net.d/shared.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "shared",
  "plugins": [
    {"type": "bridge", "bridge": "embmh0", "isGateway": true,
     "ipam": {"type": "host-local", "subnet": "10.77.$h.0/24", "dataDir": "$tmp/h$h/ipam"}},
    {"type": "embedns", "dataDir": "$tmp/h$h/data", "hostResolvConf": "$tmp/h$h/resolv.conf",
     "etcNetns": true, "capabilities": {"aliases": true, "dns": true, "links": true, "name": true},
     "etcd": {"endpoints": ["http://10.99.0.$h:2379"$others], "host": "host$h", "ttl": $ttl}}
  ]
}
JSON
done
sed -n '/"type": "embedns"/,/"etcd"/p' "$tmp/h1/net.d/shared.conflist" | sed 's/^/  host1: /'

say "3. A container on each host: web on host1, db on host2, cli on host3 (with a link web:front)"
ipof() { sed -n 's/.*"address": "\([0-9.]*\)\/.*/\1/p' | head -1; }
declare -A ip
for h in 1 2 3; do
  ip netns add "$id-c$h"
  n=${names[$((h - 1))]}
  args="IgnoreUnknown=1;K8S_POD_NAME=$n"
  [ "$n" = cli ] && args="$args;EMBEDNS_LINKS=web:front"
  ip[$n]=$(cni "$h" add "$h" CNI_ARGS="$args" CAP_ARGS='{"aliases":["svc"]}' | ipof)
  printf '  host%s: %-4s %s (alias svc)\n' "$h" "$n" "${ip[$n]}"
done

say "4. Names answered across hosts, from each container's 127.0.0.11 (no query touches etcd)"
check "cli (host3): dig web (on host1)" "$(dig_in 3 web)" "${ip[web]}"
check "cli (host3): dig db.shared (on host2)" "$(dig_in 3 db.shared)" "${ip[db]}"
check "cli (host3): dig front (its link to web)" "$(dig_in 3 front)" "${ip[web]}"
check "web (host1): dig front (the link is cli's)" "$(dig_in 1 front)" ""
check "web (host1): dig svc (alias on all three)" "$(dig_in 1 svc)" "$(printf '%s\n' "${ip[@]}" | sort | tr '\n' ' ' | sed 's/ $//')"
check "db (host2): dig -x ${ip[cli]} (PTR)" "$(dig_in 2 -x "${ip[cli]}")" "cli.shared."
echo "  what etcd holds:"
on 1 env ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 get --prefix --keys-only /embedns/ | sed '/^$/d; s/^/    /'

say "5. embedns status on host1"
on 1 "$bin/embedns" status --data-dir "$tmp/h1/data" | sed 's/^/  /'

say "6. host3 dies: its sync process, resolver and etcd member SIGKILLed (no clean DEL)"
pkill -KILL -f "embedns-(resolverd|syncd) --data-dir $tmp/h3/"
pkill -KILL -f "etcd --name m3 --data-dir $tmp/h3/etcd"
start=$(date +%s%N)
until [ -z "$(dig_in 1 cli)" ]; do
  [ $(( ($(date +%s%N) - start) / 1000000 )) -gt 20000 ] && break
done
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "web (host1): dig cli, after host3 died" "$(dig_in 1 cli)" ""
echo "  cli was gone from host1 after ${ms} ms (lease TTL ${ttl} s; the bound is TTL + 4 s)"
check "web (host1): dig db, host2 alive" "$(dig_in 1 db)" "${ip[db]}"

say "7. Cleaning up: cnitool del on the live hosts, then the namespaces"
for h in 1 2; do cni "$h" del "$h" >/dev/null; done
check "resolvers and sync processes left (host1, host2)" \
  "$( (pgrep -f "embedns-(resolverd|syncd) --data-dir $tmp/h[12]/" || true) | wc -l)" "0"

if [ "$failed" = 0 ]; then say "Every answer was right."; else say "Some answers were WRONG."; fi
exit "$failed"
