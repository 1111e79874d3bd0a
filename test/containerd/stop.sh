#!/usr/bin/env bash
# Stops a containerd started by start.sh DIR and everything it ran: kills
# its containers, stops containerd, kills leftover shims, unmounts what is
# mounted under DIR and removes DIR (unless KEEP=1). Safe to run twice.
set -uo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 1; }
[ -d "$1" ] || exit 0
dir="$(cd "$1" && pwd)"
sock="$dir/containerd.sock"
pidfile="$dir/containerd.pid"

if [ -S "$sock" ] && ctr -a "$sock" version >/dev/null 2>&1; then
	tasks="$(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null || true)"
	for t in $tasks; do
		ctr -a "$sock" -n k8s.io tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true
	done
	for t in $tasks; do
		ctr -a "$sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
	done
fi

if [ -f "$pidfile" ]; then
	pid="$(cat "$pidfile")"
	if kill -0 "$pid" 2>/dev/null && grep -qa containerd "/proc/$pid/cmdline"; then
		kill -TERM "$pid" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
fi

# Shims outlive containerd by design: kill those of this instance (their
# command line names its socket) and what they run.
for f in $(grep -lsaF -- "$sock" /proc/[0-9]*/cmdline); do
	shim="${f#/proc/}"; shim="${shim%/cmdline}"
	case "$(readlink "/proc/$shim/exe" 2>/dev/null)" in
	*containerd-shim*)
		for c in $(pgrep -P "$shim" 2>/dev/null); do kill -KILL "$c" 2>/dev/null; done
		kill -KILL "$shim" 2>/dev/null || true
		;;
	esac
done

# Mounts (rootfs overlays, sandbox shm) under DIR, deepest first.
awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
	umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
done

if [ "${KEEP:-0}" != 1 ]; then
	rm -rf "$dir"
fi
