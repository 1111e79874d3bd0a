# oneinfra: `make build`, `make test`, `make demo`. See README.md.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/oneinfra/oneinfra/internal/version.Version=$(VERSION)
PREFIX ?= /usr/local
GO ?= go

.PHONY: build test unit fuzz lint proto install clean demo demo-down drain-soak deps

# `make images`: the test images and Kubernetes binaries, no registry needed.
include test/images/images.mk

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

# The Debian packages the tests and the demo need (containerd, haproxy,
# iptables, ...): installed when missing, as root.
deps:
	./hack/install-deps.sh

# Every test: unit, multi-server, real containerd and end-to-end lab tests
# (they need root and the images), then a short fuzz run of the manifest
# decoder.
test: deps lint images unit fuzz

# The end-to-end tests run verbose: they print what they measure.
unit:
	$(GO) test -race -count=1 -timeout 40m $$($(GO) list ./... | grep -v /test/e2e)
	$(GO) test -race -count=1 -timeout 70m -v ./test/e2e/

# 20 drains in a row of hosts shared by a one- and a three-replica
# cluster, with both cores kept busy, probing both APIs (make test runs 6).
drain-soak: build images
	ONEINFRA_DRAINS=20 ONEINFRA_DRAIN_LOAD=1 $(GO) test -count=1 -v -timeout 60m -run '^TestDrainLoop$$' ./test/e2e/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./internal/manifest

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The whole system on one machine; `make demo-down` removes it.
demo: deps build images _output/bin/lab
	./test/demo/demo.sh

demo-down: _output/bin/lab
	./test/demo/demo-down.sh

_output/bin/lab: $(shell find test/lab internal/testutil -name '*.go')
	$(GO) build -o $@ ./test/lab/cmd/lab

# Regenerates proto/*.pb.go (committed).
proto:
	./hack/gen-proto.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/systemd/system
	install -m 0755 bin/* $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 systemd/*.service $(DESTDIR)/etc/systemd/system/

clean:
	rm -rf bin _output
