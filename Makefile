# wirken: build, run and test. `make run` and `make test` are the two commands a newcomer needs
# (as root on a Debian host); see README.md.

GO      ?= go
BIN     := bin/wirken
CONFIG  ?= configs/wirken.toml
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Debian packages the tests and `make generate` need.
DEB_PKGS := clang-14 llvm-14 libbpf-dev curl iproute2 ca-certificates swtpm softhsm2 gcc
# The qemu runner of make test-vm (cpio checks its initramfs writer).
DEB_PKGS += qemu-system-x86 cpio

.PHONY: all build build-pkcs11 generate check-generate run test test-pkcs11 test-jaeger test-vm unit deps lint clean

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

## test: install what the tests need, then run everything: lint, generated-code freshness, unit,
## privileged and end-to-end tests (as root; with CI=true a privileged test that would skip fails),
## the PKCS#11 seal against SoftHSM2, and the privileged tests again inside qemu on kernel 6.1
test: deps lint check-generate test-pkcs11
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) test-vm

## test-vm: `wirken doctor`, the privileged bpf, audit disk-full and doctor tests and the vm-tests
## end-to-end tests chosen by -e2e inside qemu, booted with Debian bookworm's 6.1 cloud kernel
## (fetched with apt-get download into vm-tests/.cache); KVM if /dev/kvm works, else software
## emulation. Budget 10 minutes; 60-140 s here with a warm build cache.
test-vm: deps
	$(GO) run ./vm-tests/qemu -timeout 10m

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
	rm -rf bin vm-tests/.cache
