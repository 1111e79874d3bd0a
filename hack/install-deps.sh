#!/usr/bin/env bash
# Installs the Debian packages that `make demo` and `make test` need (and
# `.ci/run` through them): protoc for `make proto`; containerd, runc,
# haproxy, iproute2, iptables, nsenter and the CNI plugins for the real pods,
# proxies, network namespaces and worker nodes. Does nothing when they are
# all there; needs root otherwise.
set -euo pipefail
need=()
for pkg_bin in protobuf-compiler:protoc git:git make:make containerd:containerd runc:runc \
  haproxy:/usr/sbin/haproxy iproute2:ip iptables:/usr/sbin/xtables-nft-multi util-linux:nsenter \
  containernetworking-plugins:/usr/lib/cni/bridge; do
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
