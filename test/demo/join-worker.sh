#!/usr/bin/env bash
# Joins a worker host of `make demo` (worker-1 or worker-2, each behind two
# NAT routers) to the demo cluster: a worker token, then `oneinfra-agent
# worker` inside the host's network namespace with the kubelet of
# `make images`, and waits for the node to be Ready.
#
#   test/demo/join-worker.sh worker-1
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX=oilab
DEMO=/run/$PREFIX
BIN=$PWD/bin
NAME=${1:?usage: $0 worker-1|worker-2}
HOST=$DEMO/$NAME
C() { "$BIN/oneinfra-coord" --config "$DEMO/coordinator/admin.conf" "$@"; }
K() { "$PWD/_output/bin/kubectl" --kubeconfig "$DEMO/demo.kubeconfig" "$@"; }

[ -d "$HOST/containerd" ] || { echo "no demo worker host $NAME: run 'make demo' first" >&2; exit 1; }
echo "== oneinfra-coord token create --kind worker --cluster demo"
eval "$(C token create --kind worker --cluster demo | awk '/^token:/{print "TOKEN="$2} /^ca-hash:/{print "HASH="$2}')"
# The join endpoint of the public hypervisor running the cluster's VPN
# endpoint: only it relays the cluster's joins.
PUBLIC=$(C get cluster demo -o yaml | awk '/vpnEndpoint:/{sub(/:[0-9]+$/, "", $2); print $2}')
cmd=("$BIN/oneinfra-agent" worker --join "$PUBLIC:7445" --token "$TOKEN" --ca-hash "$HASH" --name "$NAME"
  --cri-endpoint "unix://$HOST/containerd/containerd.sock" --data-dir "$HOST/worker"
  --kubelet-command "$PWD/_output/bin/kubelet" --kubelet-root-dir "$HOST/kubelet" --cgroup-root "/$PREFIX-$NAME"
  --cni-conf-dir "$HOST/cni/net.d" --interface "oi-$NAME")
echo "== in $NAME's namespace: ${cmd[*]/$TOKEN/<token>}"
nsenter --net="/run/netns/$PREFIX-$NAME" -- "${cmd[@]}" >>"$HOST/worker.log" 2>&1 &
echo $! >"$DEMO/proc-$!.pid"
disown
began=$SECONDS
until [ "$(K get node "$NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do
  if [ $((SECONDS - began)) -gt 300 ]; then
    echo "node $NAME not Ready after 5 minutes; see $HOST/worker.log and $HOST/kubelet.log" >&2
    exit 1
  fi
  sleep 2
done
echo "node $NAME Ready in $((SECONDS - began))s (log: $HOST/worker.log)"
K get nodes -o wide
C cluster peers demo
