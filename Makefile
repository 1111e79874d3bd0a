# oneinfra: `make build`, `make test`, `make demo`. See README.md.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/oneinfra/oneinfra/internal/version.Version=$(VERSION)
PREFIX ?= /usr/local
GO ?= go

.PHONY: build test unit fuzz lint proto install clean demo demo-down drain-soak deps conformance conformance-smoke bench bench-smoke

# `make images`: the test images and Kubernetes binaries, no registry needed.
include test/images/images.mk

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

# The Debian packages the tests and the demo need (containerd, haproxy,
# iptables, ...): installed when missing, as root.
deps:
	./hack/install-deps.sh

# Every test: unit, multi-server, real containerd and end-to-end lab tests
# (they need root and the images), a small make bench, the conformance
# smoke subset, then a short fuzz run of the manifest decoder.
test: deps lint images unit bench-smoke conformance-smoke fuzz

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
demo: deps build images _output/bin/lab $(REGISTRY_BIN)
	./test/demo/demo.sh

demo-down: _output/bin/lab
	./test/demo/demo-down.sh

_output/bin/lab: $(shell find test/lab internal/testutil -name '*.go')
	$(GO) build -o $@ ./test/lab/cmd/lab

# The upstream Kubernetes e2e suite against the demo's cluster (workers
# behind NATs): its images built here and served by a registry in the lab
# (no outside registry is reached). FOCUS defaults to every [Conformance]
# test; SKIP to none.
CONFORMANCE_IMAGES := $(addprefix $(IMAGES_DIR)/,$(addsuffix .tar,agnhost agnhost-prev busybox pause-e2e nginx \
	glibc-dns-testing kitten nautilus nonewprivs sample-apiserver etcd-e2e))
FOCUS ?= \[Conformance\]
SKIP ?=
conformance: deps build images _output/bin/lab $(E2E_TEST) $(GINKGO) $(REGISTRY_BIN)
	FOCUS='$(FOCUS)' SKIP='$(SKIP)' ./test/conformance/run.sh $(CONFORMANCE_IMAGES)

# make test's part of it (about 10 minutes): an admission webhook, an
# aggregated API server, the pod and service proxy, DNS, logs, exec and
# port-forward, and Services and pods across the two NAT'd workers.
CONFORMANCE_SMOKE := AdmissionWebhook .*should be able to deny pod and configmap creation|Aggregator Should be able to support the 1.17 Sample API Server|Proxy version v1 should proxy through a service and a pod|DNS should provide DNS for services  *\[Conformance\]|Kubectl logs logs should be able to retrieve and filter logs|Pods should support remote command execution over websockets|Pods should support retrieving logs from the container over websockets|Granular Checks: Pods should function for intra-pod communication: http|Services should serve a basic endpoint from pods|Port forwarding With a server listening on localhost should support forwarding over websockets
conformance-smoke:
	$(MAKE) conformance FOCUS='$(CONFORMANCE_SMOKE)'

# The figures of the README's table, each beside its goal and a baseline of
# the same run: in the lab (root), cluster creation against etcd and
# kube-apiserver started by hand and a control plane's idle memory; then a
# fleet of AGENTS simulated agents (mutual TLS, the agents' real intervals)
# against three coordinator servers on this machine.
AGENTS ?= 10000
BENCH_ROWS := _output/bench/lab.tsv
bench: deps build images _output/bin/lab
	mkdir -p $(dir $(BENCH_ROWS)) && rm -f $(BENCH_ROWS)
	ONEINFRA_BENCH_ROWS=$(CURDIR)/$(BENCH_ROWS) $(GO) test -tags bench -count=1 -v -timeout 30m -run '^TestCreationBench$$' ./test/e2e/
	$(GO) run ./test/bench/fleet -agents $(AGENTS) -coord bin/oneinfra-coord -rows $(BENCH_ROWS)

# make test's run of it (about a minute): 300 agents, a short window.
bench-smoke: build
	$(GO) run ./test/bench/fleet -agents 300 -window 10s -clusters 10 -coord bin/oneinfra-coord

# Regenerates proto/*.pb.go (committed).
proto:
	./hack/gen-proto.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/systemd/system
	install -m 0755 bin/* $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 systemd/*.service $(DESTDIR)/etc/systemd/system/

clean:
	rm -rf bin _output
