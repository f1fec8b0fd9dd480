# What both demos print and check with (sourced by demo.sh and demo-multihost.sh).
# Each sets `failed=0` first; CHECK_W1 and CHECK_W2 set check's column widths.

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

# dig_ns NETNS ARGS...: dig's short answers from 127.0.0.11 inside NETNS, sorted, on one line.
dig_ns() { local ns=$1; shift; ip netns exec "$ns" dig @127.0.0.11 +time=3 +tries=1 +short "$@" | sort | tr '\n' ' ' | sed 's/ $//'; }

# check DESCRIPTION GOT WANT: one line saying ok, or WRONG (and failed=1).
check() {
  local w1=${CHECK_W1:-44} w2=${CHECK_W2:-28}
  if [ "$2" = "$3" ]; then printf "  %-${w1}s -> %-${w2}s ok\n" "$1" "${2:-(no answer)}"
  else printf "  %-${w1}s -> %-${w2}s WRONG (want %s)\n" "$1" "${2:-(no answer)}" "${3:-(no answer)}"; failed=1; fi
}
