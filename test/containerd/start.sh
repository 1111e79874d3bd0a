#!/usr/bin/env bash
# Starts a private containerd (CRI plugin, runc) with its own root, state and
# socket under DIR, in the background, and prints its socket path.
#
#   test/containerd/start.sh DIR        # socket: DIR/containerd.sock
#   test/containerd/stop.sh DIR         # stops it and everything it ran
#
# Several can run side by side. Run it inside `nsenter --net=/run/netns/NS`
# to give its host-network pods that network namespace (not `ip netns exec`,
# whose fresh /sys hides the cgroup mounts runc needs). Needs root,
# containerd and runc (Debian: apt-get install -y containerd runc).
#
# Environment:
#   CONTAINERD_SANDBOX_IMAGE  pause image (default: "pause" of test/images/images.txt)
#   CONTAINERD_LOG_LEVEL      default info
#   CONTAINERD_START_TIMEOUT  seconds to wait for the socket, default 30
#   CONTAINERD_CNI_BIN_DIR    CNI plugins (default DIR/cni/bin, empty: pods are
#                             host-network only); e.g. /usr/lib/cni (Debian:
#                             apt-get install -y containernetworking-plugins)
#   CONTAINERD_CNI_CONF_DIR   CNI configuration, created if missing and watched:
#                             a configuration written there later is used for
#                             the next pods (default DIR/cni/net.d, empty)
set -euo pipefail

die() { echo "containerd/start.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 DIR"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
dir="$(cd "$1" && pwd)"

command -v containerd >/dev/null || die "containerd is not installed (Debian: apt-get install -y containerd runc)"
command -v runc >/dev/null || die "runc is not installed (Debian: apt-get install -y containerd runc)"
command -v ctr >/dev/null || die "ctr is not installed (it comes with Debian's containerd package)"
[ "$(id -u)" = 0 ] || die "containerd needs root"

sock="$dir/containerd.sock"
pidfile="$dir/containerd.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
	die "a containerd already runs for $dir (pid $(cat "$pidfile"))"
fi
[ ${#sock} -lt 100 ] || die "socket path $sock is too long for a unix socket"

sandbox_image="${CONTAINERD_SANDBOX_IMAGE:-$(awk '$1 == "pause" {print $2}' "$here/../images/images.txt")}"
cni_bin_dir="${CONTAINERD_CNI_BIN_DIR:-$dir/cni/bin}"
cni_conf_dir="${CONTAINERD_CNI_CONF_DIR:-$dir/cni/net.d}"
if [ -n "${CONTAINERD_CNI_BIN_DIR:-}" ]; then
	[ -x "$cni_bin_dir/loopback" ] || die "no CNI plugins in $cni_bin_dir (Debian: apt-get install -y containernetworking-plugins)"
fi
mkdir -p "$dir/root" "$dir/state" "$dir/runc" "$dir/cni/bin" "$dir/cni/net.d" "$cni_conf_dir" "$dir/certs.d"

# By default CNI points at empty directories: pods are host-network only.
# Pods' network namespaces are mounted under DIR/state, not /run/netns, so
# that stop.sh removes them with the rest.
# restrict_oom_score_adj: without it the sandbox fails on these machines
# (runc: "can't get final child's PID from pipe"). Registries are
# configured in DIR/certs.d/HOST/hosts.toml (none by default; read at each
# pull).
cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = ""
  level = "${CONTAINERD_LOG_LEVEL:-info}"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox_image"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$dir/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin_dir"
    conf_dir = "$cni_conf_dir"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/certs.d"
TOML

# setsid: its own session, so that a signal to the caller's process group
# does not reach it; stop.sh stops it.
setsid containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
pid=$!
echo "$pid" > "$pidfile"

timeout="${CONTAINERD_START_TIMEOUT:-30}"
for _ in $(seq $((timeout * 10))); do
	if ! kill -0 "$pid" 2>/dev/null; then
		tail -n 20 "$dir/containerd.log" >&2 || true
		die "containerd exited at start; its log: $dir/containerd.log"
	fi
	if [ -S "$sock" ] && ctr -a "$sock" version >/dev/null 2>&1; then
		if grep -q 'failed to load plugin io.containerd.grpc.v1.cri' "$dir/containerd.log"; then
			grep 'failed to load plugin io.containerd.grpc.v1.cri' "$dir/containerd.log" >&2
			"$here/stop.sh" "$dir" >/dev/null 2>&1 || true
			die "the CRI plugin did not load"
		fi
		echo "$sock"
		exit 0
	fi
	sleep 0.1
done
tail -n 20 "$dir/containerd.log" >&2 || true
die "containerd did not answer on $sock within ${timeout}s"
