# embedns: Docker's embedded DNS for CNI networks.
#   make            release binaries in target/release
#   make dist       the release tarball: the three binaries, the example conflists, SHA256SUMS
#   make install    what `make dist` holds (no build: run it as root after `make dist` as a user)
#                   into $(DESTDIR)$(BINDIR) (default /opt/cni/bin), with links to the
#                   distribution's reference plugins (REFERENCE_PLUGINS)
#   make uninstall  removes what `make install` put there; refuses while a conf names embedns or
#                   a container still has a resolver (FORCE=1 to remove anyway)
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
# What `make uninstall` checks first: the CNI conf dir and embedns's default state dir.
CNI_CONF_DIR ?= /etc/cni/net.d
DATA_DIR     ?= /run/embedns

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST    := target/dist/embedns-$(VERSION)-$(shell uname -m)-linux

# What the tests and the demo run: the reference plugins, libcni's source (for cnitool),
# iptables, real DNS clients, dnsmasq for the demo's and bench's upstream, the real runtimes
# (podman, rootless too, and containerd), protoc (the CRI client crate of the containerd tests and
# the etcd client of embedns-syncd), etcd (the multi-host tests, bench and demo) and openssl
# (their TLS certificates), mmdebstrap (the sid root that builds the libcni 1.3 cnitool) and
# binutils (objdump: 86_dist reads the symbol versions the binaries need).
APT_PACKAGES := iptables iproute2 procps containernetworking-plugins golang-go podman runc \
                golang-github-appc-cni-dev bind9-dnsutils busybox-static dnsmasq-base \
                containerd protobuf-compiler slirp4netns uidmap etcd-server etcd-client openssl \
                mmdebstrap binutils

# The runtimes users run now, from Debian's newer suites (test-cni/newer/fetch.sh: containerd
# 2.x, etcd 3.5, CNI plugins 1.9, a libcni 1.3 cnitool), cached here between runs.
EMBEDNS_NEWER ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/embedns-newer
export EMBEDNS_NEWER

CNITOOL := test-cni/cnitool/bin/cnitool

.PHONY: all release dist install uninstall install-files deps newer cnitool test demo demo-multihost bench bench-quick soak fuzz fmt lint clean

all: release

release:
	$(CARGO) build --release --locked --bins

# The tarball a user installs from, and its checksum; its directory is what `make install`
# installs. The binaries need glibc 2.34 or newer (86_dist checks their symbol versions).
dist: release
	rm -rf $(DIST) $(DIST).tar.gz
	install -d $(DIST)/examples
	install -m 0755 target/release/embedns target/release/embedns-resolverd target/release/embedns-syncd $(DIST)/
	install -m 0644 conf/examples/*.conflist $(DIST)/examples/
	cd $(DIST) && sha256sum embedns embedns-resolverd embedns-syncd examples/*.conflist > SHA256SUMS
	tar -C $(dir $(DIST)) -czf $(DIST).tar.gz $(notdir $(DIST))
	cd $(dir $(DIST)) && sha256sum $(notdir $(DIST)).tar.gz > $(notdir $(DIST)).tar.gz.sha256
	@echo "$(DIST).tar.gz"

# No build here: root often has no cargo. `make dist` first, as a user.
install:
	@[ -x $(DIST)/embedns ] || { echo "make install: no $(DIST): run \`make dist\` first (as a user with cargo; nothing is built as root)" >&2; exit 1; }
	cd $(DIST) && sha256sum --quiet -c SHA256SUMS
	@$(MAKE) --no-print-directory install-files BUILD=$(DIST) EXAMPLES=$(DIST)/examples

uninstall:
	@if [ -z "$(FORCE)" ]; then \
	  named=$$(grep -l '"type"[[:space:]]*:[[:space:]]*"embedns"' $(CNI_CONF_DIR)/*.conf $(CNI_CONF_DIR)/*.conflist $(CNI_CONF_DIR)/*.json 2>/dev/null || true); \
	  if [ -n "$$named" ]; then echo "make uninstall: $$named still name embedns: remove its entry first (\`embedns unchain\` if you chained it), or FORCE=1" >&2; exit 1; fi; \
	  left=$$(ls $(DATA_DIR)/sandboxes 2>/dev/null | wc -l); \
	  if [ "$$left" -gt 0 ]; then echo "make uninstall: $$left container(s) still have a resolver (\`embedns status --data-dir $(DATA_DIR)\`): their DEL needs the binary; or FORCE=1" >&2; exit 1; fi; \
	fi
	rm -f $(DESTDIR)$(BINDIR)/embedns $(DESTDIR)$(BINDIR)/embedns-resolverd $(DESTDIR)$(BINDIR)/embedns-syncd
	@if [ -n "$(REFERENCE_PLUGINS)" ] && [ -d "$(REFERENCE_PLUGINS)" ]; then \
	  for p in $(REFERENCE_PLUGINS)/*; do \
	    l="$(DESTDIR)$(BINDIR)/$${p##*/}"; \
	    [ -L "$$l" ] && [ "$$(readlink "$$l")" = "$$p" ] && rm -f "$$l"; \
	  done; true; \
	fi
	rm -rf $(DESTDIR)$(EXAMPLESDIR)

# The install itself, of the binaries in BUILD (default target/release); the containerd test
# runs it on the debug build to get the plugin directory a `make install` gives.
BUILD ?= target/release
EXAMPLES ?= conf/examples
install-files:
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(EXAMPLESDIR)
	install -m 0755 $(BUILD)/embedns $(BUILD)/embedns-resolverd $(BUILD)/embedns-syncd $(DESTDIR)$(BINDIR)/
	install -m 0644 $(EXAMPLES)/*.conflist $(DESTDIR)$(EXAMPLESDIR)/
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
