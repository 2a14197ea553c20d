# wirken: build, run and test. `make run` and `make test` are the two commands a newcomer needs
# (as root on a Debian host); see README.md.

GO      ?= go
BIN     := bin/wirken
CONFIG  ?= configs/wirken.toml
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Debian packages the tests and `make generate` need.
DEB_PKGS := clang-14 llvm-14 libbpf-dev curl iproute2 ca-certificates swtpm softhsm2 gcc systemd python3 python3-botocore nodejs openssh-client openjdk-17-jdk-headless
# The qemu runner of make test-vm (cpio checks its initramfs writer).
DEB_PKGS += qemu-system-x86 cpio

.PHONY: fuzz fuzz-seeds bench demo release install all build build-pkcs11 generate check-generate run test test-pkcs11 test-jaeger test-vm unit deps lint clean

all: build

## build: the static binary at bin/wirken (no cgo, no clang needed: the eBPF objects are committed)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/wirken

## generate: recompile the eBPF programs with bpf2go (pinned in go.mod) and Debian's clang-14
generate:
	$(GO) generate ./bpf/...

## check-generate: fail if the committed bpf2go output is not what the sources produce
check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf2go output is stale: run 'make generate' and commit it"; exit 1; }

## run: build, create a dev vault, CA and demo secret if absent, and run the daemon with configs/
run: build
	@test "$$(id -u)" = 0 || { echo "make run: run me as root (the daemon loads eBPF programs and manages cgroups)"; exit 1; }
	$(BIN) vault init --config $(CONFIG) --if-missing
	$(BIN) ca init --config $(CONFIG) --if-missing
	@$(BIN) vault list --config $(CONFIG) | grep -q '^demo ' || \
		{ head -c 24 /dev/urandom | base64 | $(BIN) vault put --config $(CONFIG) --host api.example.test demo; }
	$(BIN) run --config $(CONFIG)

## demo: the story in plain words, in a throwaway network namespace (as root): an unmodified agent
## calls a mock LLM API with the key injected, an exfiltration attempt is refused, the audit log
## verifies. It removes everything it made.
demo: build
	@test "$$(id -u)" = 0 || { echo "make demo: run me as root (eBPF, cgroups, a network namespace)"; exit 1; }
	CGO_ENABLED=0 $(GO) build -o bin/wirken-demo ./demo
	unshare --net -- bin/wirken-demo --wirken $(BIN)

## bench: issue 9's workloads (keep-alive POST, a new connection per request, open-loop latency at
## 1,000 req/s, 1,000 connections, SSE, 100 MB up/download, start-up, wirken's feature ablation,
## eBPF connect() cost) against direct, wirken (through its eBPF steering), an nginx TLS reverse
## proxy, mitmdump and Squid ssl-bump, interleaved with direct brackets, in a throwaway network
## namespace; writes bench/RESULTS.md (~20 min). As root; not part of make test. Installs
## nginx-light, wrk, mitmproxy, squid-openssl and iptables with apt-get if missing.
## BENCH_FLAGS="-workloads keepalive,latency -paths wirken,nginx-rp -trials 1" for a quick run;
## see README for -heavy-trials, -conns-trials, -duration.
BENCH_FLAGS ?=
bench: build
	@test "$$(id -u)" = 0 || { echo "make bench: run me as root (eBPF, cgroups, a network namespace)"; exit 1; }
	@missing=""; for c in nginx:nginx-light wrk:wrk mitmdump:mitmproxy squid:squid-openssl iptables:iptables; do \
		command -v $${c%%:*} >/dev/null || missing="$$missing $${c#*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; fi
	CGO_ENABLED=0 $(GO) build -o bin/wirken-bench ./bench
	unshare --net -- bin/wirken-bench --wirken $(BIN) --commit $(VERSION) --out bench/RESULTS.md $(BENCH_FLAGS)

## release: the static binary for a release, reproducible (the same commit and Go give the same
## bytes: -trimpath, no build id, no cgo), its SHA256SUMS and, with RELEASE_KEY=an OpenSSH Ed25519
## private key, SHA256SUMS.sig (`ssh-keygen -Y sign`, namespace wirken-release). See README.
DIST        ?= dist
GOARCH      ?= $(shell $(GO) env GOARCH)
RELEASE_BIN := wirken-linux-$(GOARCH)
release:
	mkdir -p $(DIST)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -buildvcs=false \
		-ldflags '-s -w -buildid= -X main.version=$(VERSION)' -o $(DIST)/$(RELEASE_BIN) ./cmd/wirken
	@if ldd $(DIST)/$(RELEASE_BIN) >/dev/null 2>&1; then echo "release: $(RELEASE_BIN) is dynamically linked"; exit 1; fi
	cd $(DIST) && sha256sum $(RELEASE_BIN) > SHA256SUMS && cat SHA256SUMS
	@if [ -n "$(RELEASE_KEY)" ]; then \
		rm -f $(DIST)/SHA256SUMS.sig; \
		ssh-keygen -q -Y sign -f "$(RELEASE_KEY)" -n wirken-release $(DIST)/SHA256SUMS && echo "signed $(DIST)/SHA256SUMS.sig"; \
	else echo "release: RELEASE_KEY not set: SHA256SUMS is not signed"; fi

## install: build, then install the binary, /etc/wirken (existing files kept), /var/lib/wirken and
## the systemd unit; DESTDIR=/some/root and PREFIX=/usr change where (see `wirken install -h`)
DESTDIR ?=
PREFIX  ?= /usr/local
install: build
	$(BIN) install --root "$(if $(DESTDIR),$(DESTDIR),/)" --prefix "$(PREFIX)"

## deps: install the Debian packages the tests need, if any are missing (needs root)
deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		test "$$(id -u)" = 0 || { echo "make deps: need root to install$$missing"; exit 1; }; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

## lint: gofmt and go vet clean
lint:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## unit: the tests that need no root
unit:
	$(GO) test -count=1 ./...

## fuzz: run every Go fuzz target (found automatically) for FUZZTIME each, one worker, with its
## committed corpus (testdata/fuzz/<Target>/); fails on a crasher and says where it was written.
## FUZZ_MATCH=regexp picks targets ("import/path.FuzzName"). See scripts/fuzz.sh.
FUZZTIME ?= 10s
CI_FUZZTIME ?= 4s
FUZZ_MATCH ?= .
fuzz:
	FUZZTIME=$(FUZZTIME) FUZZ_MATCH='$(FUZZ_MATCH)' GO=$(GO) scripts/fuzz.sh

## fuzz-seeds: rewrite the committed seed corpora (testdata/fuzz/*/seed-*) from the seeds the fuzz
## targets make (internal/fuzzseed)
fuzz-seeds:
	WIRKEN_FUZZ_SEEDS=write $(GO) test -count=1 -run '^Fuzz' ./...

## test: install what the tests need, then run everything: lint, generated-code freshness, unit,
## privileged and end-to-end tests (as root; with CI=true a privileged test that would skip fails),
## every fuzz target for CI_FUZZTIME (0: skipped; go test still runs the committed corpora),
## the PKCS#11 seal against SoftHSM2, and the privileged tests again inside qemu on kernel 6.1
test: deps lint check-generate test-pkcs11
	$(GO) test -count=1 -timeout 30m ./...
	$(if $(filter 0,$(CI_FUZZTIME)),,$(MAKE) fuzz FUZZTIME=$(CI_FUZZTIME))
	$(MAKE) test-vm

## test-vm: `wirken doctor`, the privileged bpf, audit disk-full and doctor tests and the vm-tests
## end-to-end tests chosen by -e2e inside qemu, booted with Debian bookworm's 6.1 cloud kernel
## (fetched with apt-get download into vm-tests/.cache); KVM if /dev/kvm works, else software
## emulation. Budget 30 minutes (the load and soak tests are in it); see README for the times.
test-vm: deps
	$(GO) run ./vm-tests/qemu -timeout 30m

## test-pkcs11: the PKCS#11 seal (cgo, build tag pkcs11) against Debian's SoftHSM2
test-pkcs11: deps
	CGO_ENABLED=1 $(GO) test -count=1 -tags pkcs11 ./vault/...

## build-pkcs11: a binary with the PKCS#11 seal (cgo, so not static)
build-pkcs11:
	CGO_ENABLED=1 $(GO) build -trimpath -tags pkcs11 -ldflags '$(LDFLAGS)' -o bin/wirken-pkcs11 ./cmd/wirken

## test-jaeger: build Jaeger v1.76.0 from its own pinned module (vm-tests/jaeger; about 8 minutes
## the first time), run it on loopback and check an agent's spans arrive with their audit seq
JAEGER := vm-tests/.cache/jaeger
$(JAEGER): vm-tests/jaeger/go.mod vm-tests/jaeger/go.sum
	cd vm-tests/jaeger && $(GO) build -o ../.cache/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

test-jaeger: deps $(JAEGER)
	WIRKEN_JAEGER_BIN=$(abspath $(JAEGER)) $(GO) test -count=1 -tags jaeger -run TestJaeger -v ./vm-tests

clean:
	rm -rf bin dist vm-tests/.cache
