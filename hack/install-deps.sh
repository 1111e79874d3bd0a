#!/usr/bin/env bash
# Installs the Debian packages that `make demo` and `make test` need (and
# `.ci/run` through them): protoc for `make proto`; containerd, runc,
# haproxy, iproute2, iptables, nsenter and the CNI plugins for the real pods,
# proxies, network namespaces and worker nodes; busybox-static,
# bind9-dnsutils, curl, netcat-openbsd and nginx-light for the e2e suite's
# images (make conformance). Does nothing when they are
# all there; needs root otherwise.
set -euo pipefail
need=()
for pkg_bin in protobuf-compiler:protoc git:git make:make containerd:containerd runc:runc \
  haproxy:/usr/sbin/haproxy iproute2:ip iptables:/usr/sbin/xtables-nft-multi util-linux:nsenter \
  containernetworking-plugins:/usr/lib/cni/bridge busybox-static:/bin/busybox bind9-dnsutils:/usr/bin/dig \
  curl:/usr/bin/curl netcat-openbsd:/bin/nc.openbsd nginx-light:/usr/sbin/nginx; do
  bin=${pkg_bin#*:}
  if [[ $bin == /* ]]; then [ -x "$bin" ] && continue; else command -v "$bin" >/dev/null && continue; fi
  need+=("${pkg_bin%%:*}")
done
((${#need[@]})) || exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]}; run as root (or: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
# haproxy and nginx are here for their binaries (the images copy them): on
# a host with systemd, the services the packages just started are stopped.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  for pkg in haproxy nginx-light; do
    [[ " ${need[*]} " == *" $pkg "* ]] && systemctl disable --now "${pkg%-light}" >/dev/null 2>&1 || true
  done
fi
