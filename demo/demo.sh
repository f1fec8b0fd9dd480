#!/usr/bin/env bash
# make demo: three containers on a cnitool network, answered the way Docker answers them.
# Everything lives in namespaces and a temp dir made here, removed at the end; the machine's
# own network, CNI config and nameserver are not touched. Exits non-zero if an answer is wrong.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/demo/common.sh"
bin="$here/target/release"
cnitool="$here/test-cni/cnitool/bin/cnitool"
[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, iptables)"; exit 1; }
for f in "$bin/embedns" "$bin/embedns-resolverd" "$cnitool"; do
  [ -x "$f" ] || { echo "missing $f: run 'make demo' (it builds everything)"; exit 1; }
done

id="ed$$"
tmp=$(mktemp -d /tmp/embedns-demo.XXXXXX)
# The resolvers run as an unprivileged user (resolverUser): it must be able to reach the
# state dir inside this one.
chmod 0711 "$tmp"
host="$id-host"
failed=0

cleanup() {
  set +e
  for c in web api cli; do
    [ -e "/run/netns/$id-$c" ] && cni del "$c" >/dev/null 2>&1
    ip netns del "$id-$c" 2>/dev/null
  done
  [ -f "$tmp/dnsmasq.pid" ] && kill "$(cat "$tmp/dnsmasq.pid")" 2>/dev/null
  ip netns del "$host" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

cni()  {
  local c=$1; shift
  ip netns exec "$host" env NETCONFPATH="$tmp/net.d" CNI_PATH="$tmp/bin" CNI_CACHE_DIR="$tmp/cache" \
    "$@" "$cnitool" "${CNITOOL_VERB:-del}" demo "/run/netns/$id-$c"
}
add()  { local c=$1; shift; CNITOOL_VERB=add cni "$c" "$@"; }
dig_in() { local c=$1; shift; dig_ns "$id-$c" "$@"; }

say "1. A private 'host' namespace for the demo, so the machine's network stays as it is"
mkdir -p "$tmp/net.d" "$tmp/bin" "$tmp/cache" "$tmp/data"
ln -s /usr/lib/cni/bridge /usr/lib/cni/host-local "$bin/embedns" "$bin/embedns-resolverd" "$tmp/bin/"
ip netns add "$host"
ip netns exec "$host" ip link set lo up
echo "  netns $host, CNI bin dir $tmp/bin (bridge, host-local, embedns)"

say "2. A fake upstream nameserver (dnsmasq) on the demo host's 127.0.0.53"
ip netns exec "$host" dnsmasq --listen-address=127.0.0.53 --bind-interfaces --no-resolv --no-hosts \
  --local=/example.test/ --address=/hello.example.test/203.0.113.7 --pid-file="$tmp/dnsmasq.pid" --user=root
printf 'nameserver 127.0.0.53\nsearch example.test\n' > "$tmp/host-resolv.conf"
echo "  example.test: hello -> 203.0.113.7, any other name NXDOMAIN; the demo's host resolv.conf names 127.0.0.53"

say "3. The network: conf/examples/cnitool.conflist, with the demo's state dir and resolv.conf"
cat > "$tmp/net.d/demo.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "demo",
  "plugins": [
    {"type": "bridge", "bridge": "embdemo0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "subnet": "10.89.42.0/24", "dataDir": "$tmp/ipam"}},
    {"type": "embedns", "dataDir": "$tmp/data", "hostResolvConf": "$tmp/host-resolv.conf",
     "etcNetns": true, "capabilities": {"aliases": true, "dns": true, "links": true, "name": true}}
  ]
}
JSON
sed 's/^/  /' "$tmp/net.d/demo.conflist"

say "4. Three containers, added with cnitool (libcni) as a runtime would"
ipof() { sed -n 's/.*"address": "\([0-9.]*\)\/.*/\1/p' | head -1; }
for c in web api cli; do ip netns add "$id-$c"; done
start=$(date +%s%N)
web=$(add web CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=web" CAP_ARGS='{"aliases":["www"]}' | ipof)
api=$(add api CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=api" CAP_ARGS='{"aliases":["www"]}' | ipof)
cli=$(add cli CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=cli;EMBEDNS_LINKS=web:db" | ipof)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf '  %-4s %-12s %s\n' web "$web" "alias www" api "$api" "alias www" cli "$cli" "link web as db"
echo "  3 ADDs (bridge + host-local + embedns, each until its resolver answers): ${ms} ms"
echo "  cli's /etc/resolv.conf (via ip netns exec):"
ip netns exec "$id-cli" cat /etc/resolv.conf | sed 's/^/    /'

say "5. Docker-like answers, asked from inside the containers at 127.0.0.11:53"
both=$(printf '%s\n' "$web" "$api" | sort | tr '\n' ' ' | sed 's/ $//')
check "cli: dig web" "$(dig_in cli web)" "$web"
check "cli: dig WEB.demo. (case, name.network)" "$(dig_in cli WEB.demo.)" "$web"
check "cli: dig www (alias on web and api)" "$(dig_in cli www)" "$both"
orders=$(for i in $(seq 10); do ip netns exec "$id-cli" dig @127.0.0.11 +short www | tr '\n' ' '; echo; done | sort -u | wc -l)
check "cli: www asked 10 times, distinct orders >1" "$([ "$orders" -gt 1 ] && echo "$orders orders")" "$orders orders"
check "cli: dig db (cli's link to web)" "$(dig_in cli db)" "$web"
check "api: dig db (the link is cli's only)" "$(dig_in api db)" ""
check "cli: dig web AAAA (NODATA, no AAAA)" "$(dig_in cli web AAAA)" ""
check "cli: dig -x $web (PTR)" "$(dig_in cli -x "$web")" "web.demo."
check "cli: dig hello.example.test (forwarded)" "$(dig_in cli hello.example.test)" "203.0.113.7"
check "cli: dig nope.example.test (NXDOMAIN relayed)" \
  "$(ip netns exec "$id-cli" dig @127.0.0.11 nope.example.test | sed -n 's/.*status: \([A-Z]*\),.*/\1/p')" "NXDOMAIN"
check "cli: busybox nslookup api (resolv.conf)" \
  "$(ip netns exec "$id-cli" busybox nslookup api 2>/dev/null | sed -n 's/^Address: \([0-9.]*\)$/\1/p' | grep -v '^127' | head -1)" "$api"
echo "  cli's redirect (nat table inside cli):"
ip netns exec "$id-cli" iptables -w -t nat -S | grep EMBEDNS | sed 's/^/    /'

say "6. embedns status"
"$bin/embedns" status --data-dir "$tmp/data" | sed 's/^/  /'

say "7. Cleaning up: cnitool del, then the namespaces"
for c in web api cli; do cni "$c" >/dev/null; done
left=$( (pgrep -f "embedns-resolverd --data-dir $tmp/data" || true) | wc -l)
check "resolvers left after DEL" "$left" "0"
check "records left after DEL" "$(find "$tmp/data/networks" -name '*.json' | wc -l)" "0"

if [ "$failed" = 0 ]; then say "Every answer was right."; else say "Some answers were WRONG."; fi
exit "$failed"
