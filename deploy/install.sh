#!/bin/sh
# embedns's install container, as a DaemonSet runs it on every node (deploy/daemonset.yaml):
#   1. copies embedns, embedns-resolverd and embedns-syncd into the node's CNI bin dir, each
#      through a temporary name and a rename (resolvers already running keep their binary);
#   2. chains embedns into the conf file the runtime uses (the primary plugin's) and keeps it
#      there while the primary rewrites it: `embedns chain --watch`;
#   3. on SIGTERM or SIGINT (the pod's end), stops the watch and runs `embedns unchain`. The
#      binaries stay: pods started before keep their DNS, and their removal still cleans up
#      after them (`embedns status` on the node lists those left).
#
# Settings (environment):
#   HOST_CNI_BIN   the node's CNI bin dir, as mounted          (default /host/opt/cni/bin)
#   HOST_CNI_NETD  the node's CNI conf dir, as mounted         (default /host/etc/cni/net.d)
#   HOST_DATA_DIR  the node's embedns state dir, as mounted    (default /host/run/embedns)
#   EMBEDNS_SRC    where the image keeps the three binaries    (default /embedns)
#   EMBEDNS_CHAIN_ARGS  more `embedns chain` arguments, e.g. "--set ttl=30 --file 10-calico.conflist"
set -eu

HOST_CNI_BIN=${HOST_CNI_BIN:-/host/opt/cni/bin}
HOST_CNI_NETD=${HOST_CNI_NETD:-/host/etc/cni/net.d}
HOST_DATA_DIR=${HOST_DATA_DIR:-/host/run/embedns}
EMBEDNS_SRC=${EMBEDNS_SRC:-/embedns}
EMBEDNS_CHAIN_ARGS=${EMBEDNS_CHAIN_ARGS:-}

for b in embedns embedns-resolverd embedns-syncd; do
    install -m 0755 "$EMBEDNS_SRC/$b" "$HOST_CNI_BIN/.$b.embedns-new"
    mv -f "$HOST_CNI_BIN/.$b.embedns-new" "$HOST_CNI_BIN/$b"
done
echo "embedns install: binaries in $HOST_CNI_BIN"

# shellcheck disable=SC2086 # EMBEDNS_CHAIN_ARGS is a list of arguments
"$EMBEDNS_SRC/embedns" chain --watch --conf-dir "$HOST_CNI_NETD" $EMBEDNS_CHAIN_ARGS &
watch=$!

finish() {
    kill -TERM "$watch" 2>/dev/null || true
    wait "$watch" || true
    # shellcheck disable=SC2086
    "$EMBEDNS_SRC/embedns" unchain --conf-dir "$HOST_CNI_NETD" --data-dir "$HOST_DATA_DIR" \
        $(echo " $EMBEDNS_CHAIN_ARGS" | grep -o ' --file [^ ]*' || true)
    exit 0
}
trap finish TERM INT
wait "$watch"
# The watch ended by itself (it cannot watch the conf dir): the pod restarts.
exit 1
