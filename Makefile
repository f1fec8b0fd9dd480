# embedns: Docker's embedded DNS for CNI networks.
#   make            release binaries in target/release
#   make install    embedns, embedns-resolverd, embedns-syncd into $(DESTDIR)$(BINDIR) (default /opt/cni/bin),
#                   with links to the distribution's reference plugins (REFERENCE_PLUGINS)
#   make test       installs what it needs (apt), builds, runs unit and integration tests
#   make demo       a three-container network, Docker-like answers, everything cleaned up
#   make demo-multihost  one network over three hosts (netns) through etcd; a host dies
#   make bench      embedns against its peers, measured in the same run (bench-quick: < 5 min)
#   make soak       one resolver at full rate with churn for 60 s; memory must stay flat
#   make fuzz       coverage-guided fuzzing (cargo-afl) of the DNS and CNI input paths, the index,
#                   other hosts' records and upstream replies as the cache reads them

PREFIX      ?= /opt/cni
BINDIR      ?= $(PREFIX)/bin
EXAMPLESDIR ?= /usr/local/share/embedns/examples
# Where the distribution keeps the reference CNI plugins (Debian: /usr/lib/cni). `make install`
# links each one that BINDIR lacks into it, so a runtime that takes ONE plugin directory
# (containerd's CRI `bin_dir`) finds bridge, host-local, loopback and embedns together.
# REFERENCE_PLUGINS= (empty) installs embedns alone.
REFERENCE_PLUGINS ?= /usr/lib/cni
DESTDIR     ?=
CARGO       ?= cargo

# What the tests and the demo run: the reference plugins, libcni's source (for cnitool),
# iptables, real DNS clients, dnsmasq for the demo's and bench's upstream, the real runtimes
# (podman, rootless too, and containerd), protoc (the CRI client crate of the containerd tests and
# the etcd client of embedns-syncd), etcd (the multi-host tests, bench and demo) and openssl
# (their TLS certificates), and mmdebstrap (the sid root that builds the libcni 1.3 cnitool).
APT_PACKAGES := iptables iproute2 procps containernetworking-plugins golang-go podman runc \
                golang-github-appc-cni-dev bind9-dnsutils busybox-static dnsmasq-base \
                containerd protobuf-compiler slirp4netns uidmap etcd-server etcd-client openssl \
                mmdebstrap

# The runtimes users run now, from Debian's newer suites (test-cni/newer/fetch.sh: containerd
# 2.x, etcd 3.5, CNI plugins 1.9, a libcni 1.3 cnitool), cached here between runs.
EMBEDNS_NEWER ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/embedns-newer
export EMBEDNS_NEWER

CNITOOL := test-cni/cnitool/bin/cnitool

.PHONY: all release install install-files deps newer cnitool test demo demo-multihost bench bench-quick soak fuzz fmt lint clean

all: release

release:
	$(CARGO) build --release --locked --bins

install: release
	@$(MAKE) --no-print-directory install-files

# The install itself, of the binaries in BUILD (default target/release); the containerd test
# runs it on the debug build to get the plugin directory a `make install` gives.
BUILD ?= target/release
install-files:
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(EXAMPLESDIR)
	install -m 0755 $(BUILD)/embedns $(BUILD)/embedns-resolverd $(BUILD)/embedns-syncd $(DESTDIR)$(BINDIR)/
	install -m 0644 conf/examples/*.conflist $(DESTDIR)$(EXAMPLESDIR)/
	@if [ -n "$(REFERENCE_PLUGINS)" ] && [ -d "$(REFERENCE_PLUGINS)" ]; then \
	  for p in $(REFERENCE_PLUGINS)/*; do \
	    [ -e "$(DESTDIR)$(BINDIR)/$${p##*/}" ] || ln -s "$$p" "$(DESTDIR)$(BINDIR)/$${p##*/}"; \
	  done; \
	  echo "linked the reference plugins of $(REFERENCE_PLUGINS) into $(DESTDIR)$(BINDIR)"; \
	fi

# apt-get only for what is missing, and `apt-get update` at most once.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

newer: deps
	./test-cni/newer/fetch.sh

cnitool: $(CNITOOL)

$(CNITOOL): test-cni/cnitool/src/embedns.test/cnitool/main.go
	mkdir -p $(dir $@)
	cd test-cni/cnitool && GO111MODULE=off GOPATH=$$PWD:/usr/share/gocode \
	  GOCACHE=$${TMPDIR:-/tmp}/embedns-gocache go build -o bin/cnitool embedns.test/cnitool

test: deps newer
	$(CARGO) build --locked --bins
	$(MAKE) cnitool
	EMBEDNS_BIN_DIR=$(CURDIR)/target/debug EMBEDNS_CNITOOL=$(CURDIR)/$(CNITOOL) \
	  $(CARGO) test --locked --workspace --no-fail-fast -- --test-threads=4

demo: deps release cnitool
	./demo/demo.sh

demo-multihost: deps release cnitool
	./demo/demo-multihost.sh

bench: deps release cnitool
	./bench/bench.sh

bench-quick: deps release cnitool
	BENCH_QUICK=1 ./bench/bench.sh

# One resolver at full dnsperf rate (UDP + TCP) with ADD/DEL churn; SOAK_SECS (default 60).
soak: deps release cnitool
	BENCH_SOAK=1 ./bench/bench.sh

# FUZZ_SECS per target (default 600).
fuzz:
	./fuzz/fuzz.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf test-cni/cnitool/bin
