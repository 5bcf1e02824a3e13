# banger: build, test, and bring up a working host in two commands.
#   make up     install packages, build, start the daemon, build the default
#               image and create a first VM named dev
#   make test   everything CI runs (.ci/run): lint, unit, integration, e2e

GO        ?= go
BIN       := bin/banger
PREFIX    ?= /usr/local
STATE_DIR ?= /var/lib/banger
SOCKET    ?= /run/banger/banger.sock
IMAGE_CACHE ?= /var/cache/banger-test/images
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/banger-dev/banger/internal/cli.Version=$(VERSION)

.PHONY: all build deps up down test lint unit integration e2e bench clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/banger

deps:
	scripts/install-deps.sh

up: deps build
	scripts/up.sh $(BIN) $(PREFIX) $(STATE_DIR) $(SOCKET)

down:
	scripts/down.sh $(PREFIX)/bin/banger $(SOCKET)

# Everything CI runs. The e2e suite boots real guests (QEMU; TCG where KVM
# cannot run ordinary guests) inside a network namespace it creates.
test: lint unit integration e2e

lint:
	@out=$$(gofmt -l cmd internal test bench 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	shellcheck -x .ci/run $$(git ls-files "*.sh")

unit:
	$(GO) test -count=1 -timeout 10m ./...

# Tests that touch real host facilities (loop/xfs, namespaces, qemu boots).
integration:
	BANGER_INTEGRATION=1 BANGER_IMAGE_CACHE=$(IMAGE_CACHE) $(GO) test -count=1 -p 1 -timeout 40m ./internal/...

e2e:
	BANGER_E2E=1 BANGER_IMAGE_CACHE=$(IMAGE_CACHE) $(GO) test -count=1 -v -timeout 45m ./test/e2e/
	BANGER_E2E=1 BANGER_E2E_VMM=firecracker-fake BANGER_IMAGE_CACHE=$(IMAGE_CACHE) $(GO) test -count=1 -v -timeout 30m -run TestE2E ./test/e2e/

bench:
	bench/run.sh

clean:
	rm -rf bin
