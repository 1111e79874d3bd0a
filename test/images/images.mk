# Test images without a registry: `make images` builds OCI image-layout
# tarballs into $(IMAGES_DIR) (KEY.tar, imported with
# `ctr -a SOCK -n k8s.io images import FILE`), named as test/images/images.txt
# says, and the Kubernetes, etcd and CoreDNS binaries into $(IMAGES_BIN_DIR).
#
# Include this file from the top Makefile (`include test/images/images.mk`);
# paths are relative to the directory make runs in (the repository root).
#
# Incremental: every output is a make target with its real inputs. The
# Kubernetes, etcd and CoreDNS binaries depend only on their tools module
# (test/images/tools/*/go.mod, go.sum) and on the Go version, so a warm run
# does not even call the Go toolchain for them; images are rewritten only when
# a binary, images.txt or the image tool changed. Outputs are reproducible
# (same inputs, same digests).

IMAGES_SRC := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
# Including this file does not change the includer's default goal.
IMAGES_INCLUDER_DEFAULT_GOAL := $(.DEFAULT_GOAL)

# Output locations (override on the command line or before the include).
IMAGES_OUTPUT ?= _output
IMAGES_DIR ?= $(IMAGES_OUTPUT)/images
IMAGES_BIN_DIR ?= $(IMAGES_OUTPUT)/bin
IMAGES_BUILD_DIR ?= $(IMAGES_OUTPUT)/build

IMAGES_GO ?= go
IMAGES_HAPROXY ?= /usr/sbin/haproxy
# Debian's iptables (package iptables): the nf_tables multi-call binary and
# the extension modules it loads.
IMAGES_XTABLES_MULTI ?= /usr/sbin/xtables-nft-multi
IMAGES_XTABLES_DIR ?= /usr/lib/x86_64-linux-gnu/xtables

# The one list of images: KEY REFERENCE per line.
IMAGES_LIST := $(IMAGES_SRC)/images.txt
IMAGES_KEYS := $(shell awk '!/^\#/ && NF {print $$1}' $(IMAGES_LIST))
$(foreach k,$(IMAGES_KEYS),$(eval IMAGE_REF_$(k) := $(shell awk '$$1 == "$(k)" {print $$2}' $(IMAGES_LIST))))
IMAGES_TARBALLS := $(foreach k,$(IMAGES_KEYS),$(IMAGES_DIR)/$(k).tar)

KUBE_TOOLS := $(IMAGES_SRC)/tools/kube
ETCD_TOOLS := $(IMAGES_SRC)/tools/etcd
COREDNS_TOOLS := $(IMAGES_SRC)/tools/coredns
WEED_TOOLS := $(IMAGES_SRC)/tools/seaweedfs
KUBE_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" && $$2 ~ /^v/ {print $$2} $$1 == "require" && $$2 == "k8s.io/kubernetes" {print $$3}' $(KUBE_TOOLS)/go.mod | head -n 1)
ETCD_VERSION := $(shell awk '$$1 == "go.etcd.io/etcd/server/v3" && $$2 ~ /^v/ {print $$2} $$1 == "require" && $$2 == "go.etcd.io/etcd/server/v3" {print $$3}' $(ETCD_TOOLS)/go.mod | head -n 1)
COREDNS_VERSION := $(shell awk '$$1 == "github.com/coredns/coredns" && $$2 ~ /^v/ {print $$2} $$1 == "require" && $$2 == "github.com/coredns/coredns" {print $$3}' $(COREDNS_TOOLS)/go.mod | head -n 1)
# The image tags of images.txt must name the versions the tools modules build.
ifneq ($(KUBE_VERSION),$(lastword $(subst :, ,$(IMAGE_REF_kube-apiserver))))
$(error k8s.io/kubernetes in $(KUBE_TOOLS)/go.mod is "$(KUBE_VERSION)" but $(IMAGES_LIST) tags kube-apiserver $(IMAGE_REF_kube-apiserver))
endif
ifneq ($(patsubst v%,%,$(ETCD_VERSION))-0,$(lastword $(subst :, ,$(IMAGE_REF_etcd))))
$(error go.etcd.io/etcd/server/v3 in $(ETCD_TOOLS)/go.mod is "$(ETCD_VERSION)" but $(IMAGES_LIST) tags etcd $(IMAGE_REF_etcd))
endif
ifneq ($(KUBE_VERSION),$(lastword $(subst :, ,$(IMAGE_REF_kube-proxy))))
$(error k8s.io/kubernetes in $(KUBE_TOOLS)/go.mod is "$(KUBE_VERSION)" but $(IMAGES_LIST) tags kube-proxy $(IMAGE_REF_kube-proxy))
endif
ifneq ($(COREDNS_VERSION),$(lastword $(subst :, ,$(IMAGE_REF_coredns))))
$(error github.com/coredns/coredns in $(COREDNS_TOOLS)/go.mod is "$(COREDNS_VERSION)" but $(IMAGES_LIST) tags coredns $(IMAGE_REF_coredns))
endif
KUBE_MAJOR := $(word 1,$(subst ., ,$(patsubst v%,%,$(KUBE_VERSION))))
KUBE_MINOR := $(word 2,$(subst ., ,$(patsubst v%,%,$(KUBE_VERSION))))
KUBE_LDFLAGS := -s -w $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=$(KUBE_MAJOR) -X $(p).gitMinor=$(KUBE_MINOR) -X $(p).gitTreeState=clean)
KUBE_COMMANDS := kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl kubelet
KUBE_BINS := $(addprefix $(IMAGES_BIN_DIR)/,$(KUBE_COMMANDS))
ETCD_BINS := $(IMAGES_BIN_DIR)/etcd $(IMAGES_BIN_DIR)/etcdctl
COREDNS_BIN := $(IMAGES_BIN_DIR)/coredns
# SeaweedFS's weed: not an image, the real S3 server the backup tests run.
WEED_BIN := $(IMAGES_BIN_DIR)/weed

OCIMAGE := $(IMAGES_BUILD_DIR)/ocimage
IMAGES_GO_VERSION := $(IMAGES_BUILD_DIR)/go-version.stamp

.PHONY: images images-binaries images-clean images-list images-smoke
images: $(IMAGES_TARBALLS) $(WEED_BIN)

# Runs every image in a private containerd (needs root, containerd, runc).
images-smoke:
	$(IMAGES_GO) test -tags images -count=1 -v -timeout 30m ./$(IMAGES_SRC)/

images-binaries: $(KUBE_BINS) $(ETCD_BINS) $(COREDNS_BIN) $(WEED_BIN)

images-list:
	@$(foreach k,$(IMAGES_KEYS),echo "$(IMAGES_DIR)/$(k).tar $(IMAGE_REF_$(k))";)

images-clean:
	rm -rf $(IMAGES_DIR) $(IMAGES_BUILD_DIR) $(KUBE_BINS) $(ETCD_BINS) $(COREDNS_BIN) $(WEED_BIN)

# Rewritten only when `go version` changes, so a new toolchain rebuilds.
$(IMAGES_GO_VERSION): images-force
	@mkdir -p $(@D); v="$$($(IMAGES_GO) version)"; [ "$$(cat $@ 2>/dev/null)" = "$$v" ] || echo "$$v" > $@
.PHONY: images-force
images-force:

# Small programs of the main module (stdlib only).
$(OCIMAGE): $(filter-out %_test.go,$(wildcard $(IMAGES_SRC)/oci/*.go $(IMAGES_SRC)/ocimage/*.go)) $(IMAGES_GO_VERSION)
	CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -o $@ ./$(IMAGES_SRC)/ocimage
$(IMAGES_BUILD_DIR)/pause: $(wildcard $(IMAGES_SRC)/pause/*.go) $(IMAGES_GO_VERSION)
	CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -ldflags '-s -w' -o $@ ./$(IMAGES_SRC)/pause
$(IMAGES_BUILD_DIR)/testapp: $(wildcard $(IMAGES_SRC)/testapp/*.go) $(IMAGES_GO_VERSION)
	CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -ldflags '-s -w' -o $@ ./$(IMAGES_SRC)/testapp

# Kubernetes from k8s.io/kubernetes in its own module (slow: minutes cold).
$(KUBE_BINS) &: $(KUBE_TOOLS)/go.mod $(KUBE_TOOLS)/go.sum $(IMAGES_GO_VERSION)
	@mkdir -p $(IMAGES_BIN_DIR)
	cd $(KUBE_TOOLS) && CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' \
		-o $(abspath $(IMAGES_BIN_DIR))/ $(addprefix k8s.io/kubernetes/cmd/,$(KUBE_COMMANDS))
	touch $(KUBE_BINS)

$(ETCD_BINS) &: $(ETCD_TOOLS)/go.mod $(ETCD_TOOLS)/go.sum $(IMAGES_GO_VERSION)
	@mkdir -p $(IMAGES_BIN_DIR)
	cd $(ETCD_TOOLS) && CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -ldflags '-s -w' -o $(abspath $(IMAGES_BIN_DIR))/etcd go.etcd.io/etcd/server/v3
	cd $(ETCD_TOOLS) && CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -ldflags '-s -w' -o $(abspath $(IMAGES_BIN_DIR))/etcdctl go.etcd.io/etcd/etcdctl/v3
	touch $(ETCD_BINS)

# CoreDNS with its default plugins (slow: minutes cold, many cloud SDKs).
$(COREDNS_BIN): $(COREDNS_TOOLS)/go.mod $(COREDNS_TOOLS)/go.sum $(IMAGES_GO_VERSION)
	@mkdir -p $(IMAGES_BIN_DIR)
	cd $(COREDNS_TOOLS) && CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -ldflags '-s -w' -o $(abspath $@) github.com/coredns/coredns
	touch $@

$(WEED_BIN): $(WEED_TOOLS)/go.mod $(WEED_TOOLS)/go.sum $(IMAGES_GO_VERSION)
	@mkdir -p $(IMAGES_BIN_DIR)
	cd $(WEED_TOOLS) && CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -ldflags '-s -w' -o $(abspath $@) github.com/seaweedfs/seaweedfs/weed
	touch $@

# What goes into each image: IMAGE_DEPS_KEY (make prerequisites) and
# IMAGE_ARGS_KEY (ocimage flags). Layouts follow the upstream images: binaries
# in /usr/local/bin, no entrypoint (give the command), haproxy as in the
# official image.
IMAGES_PATH_ENV := -env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The libraries of dynamically linked host binaries, as -add flags: those
# ldd lists, at the paths it prints (symlinks followed), run when the image
# is written.
IMAGES_LIBS = $$(ldd $(1) | awk '$$2 == "=>" && $$3 ~ /^\// {print "-add " $$3 ":" $$3} $$1 ~ /^\// && $$1 !~ /:$$/ {print "-add " $$1 ":" $$1}' | sort -u)

IMAGE_DEPS_pause := $(IMAGES_BUILD_DIR)/pause
IMAGE_ARGS_pause := -entrypoint '["/pause"]' -add $(IMAGES_BUILD_DIR)/pause:/pause:0755

IMAGE_DEPS_testapp := $(IMAGES_BUILD_DIR)/testapp
IMAGE_ARGS_testapp := $(IMAGES_PATH_ENV) -entrypoint '["/usr/local/bin/testapp"]' \
	-add $(IMAGES_BUILD_DIR)/testapp:/usr/local/bin/testapp:0755

IMAGE_DEPS_etcd := $(ETCD_BINS)
IMAGE_ARGS_etcd := $(IMAGES_PATH_ENV) -cmd '["/usr/local/bin/etcd"]' -mkdir /var/lib/etcd:0700 \
	$(foreach b,$(ETCD_BINS),-add $(b):/usr/local/bin/$(notdir $(b)):0755)

$(foreach c,kube-apiserver kube-controller-manager kube-scheduler,\
	$(eval IMAGE_DEPS_$(c) := $(IMAGES_BIN_DIR)/$(c))\
	$(eval IMAGE_ARGS_$(c) := $(IMAGES_PATH_ENV) -cmd '["/usr/local/bin/$(c)"]' -add $(IMAGES_BIN_DIR)/$(c):/usr/local/bin/$(c):0755))

# kube-proxy with Debian's iptables, nf_tables backend (Debian's default
# alternative, what `iptables` is on these machines: one backend on a host).
# The multi-call binary picks its tool from argv[0], so iptables,
# iptables-save, iptables-restore, ip6tables* and the *-nft names are
# symlinks to it in /usr/sbin; its extension modules are in their Debian
# directory (symlinks kept); the libraries are those ldd lists for the binary
# and the extensions (at the paths ldd prints, symlinks followed), as for
# haproxy. kube-proxy is run privileged in the host network with
# /run/xtables.lock and /lib/modules mounted, as upstream.
IMAGES_IPTABLES_TOOLS := $(foreach f,iptables ip6tables,$(foreach t,$(f) $(f)-save $(f)-restore $(f)-nft $(f)-nft-save $(f)-nft-restore,$(t)))
IMAGE_DEPS_kube-proxy := $(IMAGES_BIN_DIR)/kube-proxy $(IMAGES_XTABLES_MULTI) $(IMAGES_XTABLES_DIR) $(wildcard $(IMAGES_XTABLES_DIR)/*.so)
IMAGE_ARGS_kube-proxy = $(IMAGES_PATH_ENV) -cmd '["/usr/local/bin/kube-proxy"]' \
	-add $(IMAGES_BIN_DIR)/kube-proxy:/usr/local/bin/kube-proxy:0755 \
	-add $(IMAGES_XTABLES_MULTI):/usr/sbin/$(notdir $(IMAGES_XTABLES_MULTI)):0755 \
	$(foreach t,$(IMAGES_IPTABLES_TOOLS),-symlink /usr/sbin/$(t):$(notdir $(IMAGES_XTABLES_MULTI))) \
	-rootfs $(IMAGES_XTABLES_DIR):$(IMAGES_XTABLES_DIR) -mkdir /run \
	$(call IMAGES_LIBS,$(IMAGES_XTABLES_MULTI) $(IMAGES_XTABLES_DIR)/*.so)

$(IMAGES_XTABLES_MULTI) $(IMAGES_XTABLES_DIR):
	@echo "$@ is missing: install Debian's iptables package (apt-get install -y iptables)" >&2; exit 1

# CoreDNS as in the upstream image: /coredns, the entrypoint (a pod gives
# only args: -conf FILE). Unlike upstream (user nonroot, the binary with the
# file capability cap_net_bind_service) it runs as root unless told
# otherwise: binding port 53 needs NET_BIND_SERVICE, which root has.
IMAGE_DEPS_coredns := $(COREDNS_BIN)
IMAGE_ARGS_coredns := $(IMAGES_PATH_ENV) -entrypoint '["/coredns"]' -add $(COREDNS_BIN):/coredns:0755

# haproxy: Debian's dynamically linked binary with the libraries ldd lists
# (at the paths ldd prints, symlinks followed), in the official image's
# places; the official image stops it with SIGUSR1 (graceful) and runs it in
# master-worker mode in the foreground.
IMAGE_DEPS_haproxy := $(IMAGES_HAPROXY) $(IMAGES_BUILD_DIR)/haproxy-passwd
IMAGE_ARGS_haproxy = $(IMAGES_PATH_ENV) -stop-signal SIGUSR1 \
	-cmd '["haproxy","-W","-db","-f","/usr/local/etc/haproxy/haproxy.cfg"]' \
	-add $(IMAGES_HAPROXY):/usr/local/sbin/haproxy:0755 \
	-add $(IMAGES_BUILD_DIR)/haproxy-passwd:/etc/passwd:0644 \
	-mkdir /usr/local/etc/haproxy -mkdir /var/lib/haproxy -mkdir /run/haproxy \
	$(call IMAGES_LIBS,$(IMAGES_HAPROXY))

$(IMAGES_HAPROXY):
	@echo "$@ is missing: install Debian's haproxy package (apt-get install -y haproxy)" >&2; exit 1
$(IMAGES_BUILD_DIR)/haproxy-passwd: $(IMAGES_SRC)/images.mk
	@mkdir -p $(@D)
	printf 'root:x:0:0:root:/root:/sbin/nologin\nhaproxy:x:99:99:haproxy:/var/lib/haproxy:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > $@

# The e2e suite's images (make conformance). Upstream builds them on Alpine
# or Debian; here each is its Go program from k8s.io/kubernetes v1.37.2
# (tools/kube) and, where the tests run a shell in it, Debian's
# busybox-static (every applet a symlink in /bin, bash as sh) with the
# tools the tests call beside it: getent, dig, nslookup, host, curl and
# OpenBSD's nc in /usr/bin (first on the PATH), with their libraries.
E2E_BUILD_DIR := $(IMAGES_BUILD_DIR)/e2e
E2E_PROGRAMS := $(addprefix $(E2E_BUILD_DIR)/,agnhost nonewprivs sample-apiserver)
E2E_PACKAGES := k8s.io/kubernetes/test/images/agnhost k8s.io/kubernetes/test/images/nonewprivs k8s.io/sample-apiserver
$(E2E_PROGRAMS) &: $(KUBE_TOOLS)/go.mod $(KUBE_TOOLS)/go.sum $(IMAGES_GO_VERSION)
	@mkdir -p $(E2E_BUILD_DIR)
	cd $(KUBE_TOOLS) && CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $(abspath $(E2E_BUILD_DIR))/ $(E2E_PACKAGES)
	touch $(E2E_PROGRAMS)
# Where k8s.io/kubernetes's sources are (the kitten and nautilus pictures).
KUBE_SOURCE = $$(cd $(KUBE_TOOLS) && $(IMAGES_GO) list -m -f '{{.Dir}}' k8s.io/kubernetes)

IMAGES_BUSYBOX := /bin/busybox
IMAGES_E2E_TOOLS := /bin/bash /usr/bin/getent /usr/bin/dig /usr/bin/nslookup /usr/bin/host /usr/bin/curl /bin/nc.openbsd
# busybox and its applets but those named in $(1).
IMAGES_BUSYBOX_ARGS = -add $(IMAGES_BUSYBOX):/bin/busybox:0755 \
	$$($(IMAGES_BUSYBOX) --list | awk -v skip=" busybox $(1) " 'index(skip, " " $$1 " ") == 0 {print "-symlink /bin/" $$1 ":busybox"}')
IMAGES_SHELL_DEPS := $(IMAGES_BUSYBOX) $(IMAGES_E2E_TOOLS)
# sh is bash: Debian's busybox sh runs its own applets before the PATH's
# programs (its nc, not OpenBSD's) and drops variables whose names are no
# shell's (a Secret's keys as a pod's environment) from what it runs.
IMAGES_SH_ARGS = $(IMAGES_PATH_ENV) $(call IMAGES_BUSYBOX_ARGS,sh) -symlink /bin/sh:/usr/bin/bash
IMAGES_SHELL_ARGS = $(IMAGES_SH_ARGS) \
	$(foreach t,$(filter-out /bin/nc.openbsd,$(IMAGES_E2E_TOOLS)),-add $(t):/usr/bin/$(notdir $(t)):0755) \
	-add /bin/nc.openbsd:/usr/bin/nc:0755 $(call IMAGES_LIBS,$(IMAGES_E2E_TOOLS))
$(IMAGES_BUSYBOX) /bin/bash /usr/bin/getent:
	@echo "$@ is missing: install Debian's busybox-static, bash and libc-bin packages" >&2; exit 1
/usr/bin/dig /usr/bin/nslookup /usr/bin/host /usr/bin/curl /bin/nc.openbsd:
	@echo "$@ is missing: install Debian's bind9-dnsutils, curl and netcat-openbsd packages" >&2; exit 1

# agnhost: /agnhost, the entrypoint (a pod gives its subcommand; pause by
# default), as upstream: with porter's certificate for localhost
# (/localhost.crt, .key) and the image's own user (1000) and group (50000).
# The previous version the suite rolls back to is the same program under
# its older name.
IMAGE_DEPS_agnhost := $(E2E_BUILD_DIR)/agnhost $(IMAGES_SHELL_DEPS) $(IMAGES_BUILD_DIR)/agnhost-passwd $(IMAGES_BUILD_DIR)/agnhost-group
IMAGES_AGNHOST_ARGS = $(IMAGES_SHELL_ARGS) -entrypoint '["/agnhost"]' \
	-add $(E2E_BUILD_DIR)/agnhost:/agnhost:0755 -symlink /agnhost-2:agnhost -mkdir /uploads \
	-add $(KUBE_SOURCE)/test/images/agnhost/porter/localhost.crt:/localhost.crt:0644 \
	-add $(KUBE_SOURCE)/test/images/agnhost/porter/localhost.key:/localhost.key:0644 \
	-add $(IMAGES_BUILD_DIR)/agnhost-passwd:/etc/passwd:0644 -add $(IMAGES_BUILD_DIR)/agnhost-group:/etc/group:0644
$(IMAGES_BUILD_DIR)/agnhost-passwd: $(IMAGES_SRC)/images.mk
	@mkdir -p $(@D)
	printf 'root:x:0:0:root:/root:/bin/sh\nuser-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > $@
$(IMAGES_BUILD_DIR)/agnhost-group: $(IMAGES_SRC)/images.mk
	@mkdir -p $(@D)
	printf 'root:x:0:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\nnogroup:x:65534:\n' > $@
IMAGE_ARGS_agnhost = $(IMAGES_AGNHOST_ARGS) -cmd '["pause"]'
IMAGE_DEPS_agnhost-prev := $(IMAGE_DEPS_agnhost)
IMAGE_ARGS_agnhost-prev = $(IMAGE_ARGS_agnhost)
# kitten and nautilus: agnhost serving its root on port 80, with a picture
# and the data.json that names it.
IMAGES_PICTURE_ARGS = $(IMAGES_AGNHOST_ARGS) -cmd '["test-webserver"]' \
	-add $(KUBE_SOURCE)/test/images/$(1)/html/$(1).jpg:/$(1).jpg:0644 \
	-add $(KUBE_SOURCE)/test/images/$(1)/html/data.json:/data.json:0644
IMAGE_DEPS_kitten := $(IMAGE_DEPS_agnhost)
IMAGE_ARGS_kitten = $(call IMAGES_PICTURE_ARGS,kitten)
IMAGE_DEPS_nautilus := $(IMAGE_DEPS_agnhost)
IMAGE_ARGS_nautilus = $(call IMAGES_PICTURE_ARGS,nautilus)

# busybox: its applets, and bash as sh (above).
IMAGE_DEPS_busybox := $(IMAGES_BUSYBOX) /bin/bash
IMAGE_ARGS_busybox = $(IMAGES_SH_ARGS) -add /bin/bash:/usr/bin/bash:0755 $(call IMAGES_LIBS,/bin/bash) -cmd '["sh"]'

# glibc-dns-testing: upstream's is Debian with dnsutils; the DNS tests run
# sh, seq, dig and glibc's getent in it.
IMAGE_DEPS_glibc-dns-testing := $(IMAGES_SHELL_DEPS)
IMAGE_ARGS_glibc-dns-testing = $(IMAGES_SHELL_ARGS) -cmd '["sh"]'

IMAGE_DEPS_pause-e2e := $(IMAGE_DEPS_pause)
IMAGE_ARGS_pause-e2e := $(IMAGE_ARGS_pause) -user 65535:65535

# nonewprivs: nnp, setuid root, prints the effective uid.
IMAGE_DEPS_nonewprivs := $(E2E_BUILD_DIR)/nonewprivs
IMAGE_ARGS_nonewprivs := $(IMAGES_PATH_ENV) -cmd '["nnp"]' -add $(E2E_BUILD_DIR)/nonewprivs:/usr/local/bin/nnp:4755

IMAGE_DEPS_sample-apiserver := $(E2E_BUILD_DIR)/sample-apiserver
IMAGE_ARGS_sample-apiserver := $(IMAGES_PATH_ENV) -entrypoint '["/sample-apiserver"]' \
	-add $(E2E_BUILD_DIR)/sample-apiserver:/sample-apiserver:0755

# The etcd the aggregator test runs beside the sample API server: the
# suite names 3.7.0; this is the lab's etcd (3.6.16), the same client API.
IMAGE_DEPS_etcd-e2e := $(IMAGE_DEPS_etcd)
IMAGE_ARGS_etcd-e2e := $(IMAGE_ARGS_etcd)

# nginx: Debian's nginx-light in the foreground on port 80, serving
# /usr/share/nginx/html, logging to the container's output.
IMAGES_NGINX := /usr/sbin/nginx
IMAGE_DEPS_nginx := $(IMAGES_NGINX) $(IMAGES_BUILD_DIR)/nginx.conf $(IMAGES_BUILD_DIR)/nginx-index.html
IMAGE_ARGS_nginx = $(IMAGES_PATH_ENV) -stop-signal SIGQUIT -cmd '["nginx","-g","daemon off;"]' \
	-add $(IMAGES_NGINX):/usr/sbin/nginx:0755 -add $(IMAGES_BUILD_DIR)/nginx.conf:/etc/nginx/nginx.conf:0644 \
	-add $(IMAGES_BUILD_DIR)/nginx-index.html:/usr/share/nginx/html/index.html:0644 \
	-mkdir /var/lib/nginx -mkdir /var/log/nginx -mkdir /run $(call IMAGES_LIBS,$(IMAGES_NGINX))
$(IMAGES_NGINX):
	@echo "$@ is missing: install Debian's nginx-light package (apt-get install -y nginx-light)" >&2; exit 1
$(IMAGES_BUILD_DIR)/nginx.conf: $(IMAGES_SRC)/images.mk
	@mkdir -p $(@D)
	printf '%s\n' 'user root;' 'worker_processes 1;' 'error_log stderr;' 'pid /run/nginx.pid;' 'events {}' \
		'http { access_log /dev/stdout; server { listen 80; root /usr/share/nginx/html; } }' > $@
$(IMAGES_BUILD_DIR)/nginx-index.html: $(IMAGES_SRC)/images.mk
	@mkdir -p $(@D)
	echo '<html><body>nginx</body></html>' > $@

# The registry the suite's images are served from in the lab
# (distribution, the reference OCI registry server).
REGISTRY_TOOLS := $(IMAGES_SRC)/tools/registry
REGISTRY_BIN := $(IMAGES_BIN_DIR)/registry
$(REGISTRY_BIN): $(REGISTRY_TOOLS)/go.mod $(REGISTRY_TOOLS)/go.sum $(IMAGES_GO_VERSION)
	@mkdir -p $(@D)
	cd $(REGISTRY_TOOLS) && CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -ldflags '-s -w' -o $(abspath $@) github.com/distribution/distribution/v3/cmd/registry
	touch $@

# The e2e suite itself: e2e.test and the ginkgo that runs it in parallel,
# of the cluster's Kubernetes version.
E2E_TEST := $(IMAGES_BIN_DIR)/e2e.test
GINKGO := $(IMAGES_BIN_DIR)/ginkgo
$(E2E_TEST): $(KUBE_TOOLS)/go.mod $(KUBE_TOOLS)/go.sum $(IMAGES_GO_VERSION)
	@mkdir -p $(@D)
	cd $(KUBE_TOOLS) && CGO_ENABLED=0 $(IMAGES_GO) test -c -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $(abspath $@) k8s.io/kubernetes/test/e2e
$(GINKGO): $(KUBE_TOOLS)/go.mod $(KUBE_TOOLS)/go.sum $(IMAGES_GO_VERSION)
	@mkdir -p $(@D)
	cd $(KUBE_TOOLS) && CGO_ENABLED=0 $(IMAGES_GO) build -trimpath -o $(abspath $@) github.com/onsi/ginkgo/v2/ginkgo

# One rule per image of the list.
define IMAGES_RULE
$(if $(IMAGE_ARGS_$(1)),,$(error $(IMAGES_LIST) lists "$(1)" but $(IMAGES_SRC)/images.mk has no IMAGE_ARGS_$(1)))
$(IMAGES_DIR)/$(1).tar: $(OCIMAGE) $(IMAGES_LIST) $(IMAGE_DEPS_$(1))
	@mkdir -p $$(@D)
	$(OCIMAGE) -name $(IMAGE_REF_$(1)) -o $$@ $$(IMAGE_ARGS_$(1))
endef
$(foreach k,$(IMAGES_KEYS),$(eval $(call IMAGES_RULE,$(k))))

.DEFAULT_GOAL := $(IMAGES_INCLUDER_DEFAULT_GOAL)
