#!/usr/bin/env bash
# The whole system on one machine: a lab of network namespaces (four
# private hypervisors, two public, two worker hosts behind two NATs each)
# each with its own containerd and the images of `make images`, an image
# mirror they pull from (test/demo/mirror.sh), a coordinator, an agent per
# hypervisor, and a three-replica cluster with a VPN, reached through its
# ingress, and a spare of each kind so that it heals when a machine is cut
# off (lab cut HOST). test/demo/join-worker.sh joins a worker.
# `make demo-down` removes everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX=oilab
DEMO=/run/$PREFIX
BIN=$PWD/bin
LAB=$PWD/_output/bin/lab
C() { "$BIN/oneinfra-coord" --config "$DEMO/coordinator/admin.conf" "$@"; }

if [ -e "$DEMO" ]; then
  echo "a demo is running ($DEMO): run 'make demo-down' first" >&2
  exit 1
fi
echo "== lab: 4 private hypervisors, 2 public, 2 workers behind NAT; each a network namespace with its own containerd"
"$LAB" up --prefix "$PREFIX" --private 4 --public 2 --workers 2

start() { # NAME LOG CMD...
  local name=$1 log=$2; shift 2
  "$@" >>"$log" 2>&1 &
  echo $! >"$DEMO/proc-$!.pid"
  disown
}
MIRROR=10.214.0.1:5000
echo "== an image mirror at $MIRROR, as in an air gap (a registry; test/demo/mirror.sh): the control plane's images pushed there"
test/demo/mirror.sh $(printf '_output/images/%s.tar ' pause etcd kube-apiserver kube-controller-manager kube-scheduler haproxy kube-proxy coredns)
echo "== coordinator on 10.213.0.1:7443, naming its images in the mirror, backing clusters up to $DEMO/backups"
mkdir -p "$DEMO/backups"
start coordinator "$DEMO/coordinator.log" "$BIN/oneinfra-coord" serve --id c1 --data-dir "$DEMO/coordinator" \
  --api-addr 10.213.0.1:7443 --raft-addr 10.213.0.1:7444 --backup-target "file://$DEMO/backups" \
  --image-repository "$MIRROR" --bootstrap
for _ in $(seq 100); do C members >/dev/null 2>&1 && break; sleep 0.3; done
# One token for the six hypervisors, in a file (mode 0600) rather than on
# the command lines, which every local user can read.
eval "$(C token create --kind hypervisor --uses 6 | awk '/^token:/{print "TOKEN="$2} /^ca-hash:/{print "HASH="$2}')"
(umask 077 && echo "$TOKEN" >"$DEMO/hypervisor.token")

i=11
for hv in hv-1 hv-2 hv-3 hv-4 pub-1 pub-2; do
  extra=()
  # Lab hosts share /var/run/wireguard: each public one names its devices.
  case $hv in pub-*) extra=(--public --public-address "10.214.0.$i" --wireguard-prefix "p${hv#pub-}-") ;; esac
  start "$hv" "$DEMO/$hv/agent.log" nsenter --net="/run/netns/$PREFIX-$hv" -- \
    "$BIN/oneinfra-agent" hypervisor --name "$hv" --address "10.213.0.$i" --coordinator 10.213.0.1:7443 \
    --token-file "$DEMO/hypervisor.token" --ca-hash "$HASH" --cri-endpoint "unix://$DEMO/$hv/containerd/containerd.sock" \
    --data-dir "$DEMO/$hv/agent" --root-dir "$DEMO/$hv/root" "${extra[@]}"
  i=$((i + 1))
done
for _ in $(seq 100); do [ "$(C get hv 2>/dev/null | grep -c alive)" = 6 ] && break; sleep 0.3; done
C get hypervisors

echo "== oneinfra-coord cluster create demo --replicas 3 --vpn --wait"
C cluster create demo --replicas 3 --vpn --wait --timeout 10m
C get components
C cluster kubeconfig demo >"$DEMO/demo.kubeconfig"
chmod 600 "$DEMO/demo.kubeconfig"
echo "== a request through the ingress (kubectl get --raw /readyz, then namespaces)"
"$PWD/_output/bin/kubectl" --kubeconfig "$DEMO/demo.kubeconfig" get --raw /readyz; echo
"$PWD/_output/bin/kubectl" --kubeconfig "$DEMO/demo.kubeconfig" get namespaces
echo "== oneinfra-coord cluster backup demo --wait (an etcd backup, sealed; one is taken every 6h too)"
C cluster backup demo --wait
C cluster backups demo
echo "== a worker behind two NATs joins: test/demo/join-worker.sh worker-1"
test/demo/join-worker.sh worker-1
echo "== the API servers reach pods on worker-1 through the VPN (their egress proxy at its endpoint): a pod proxy and an aggregated API"
K() { "$PWD/_output/bin/kubectl" --kubeconfig "$DEMO/demo.kubeconfig" "$@"; }
K apply -f test/demo/egress.yaml
K wait --for=condition=Ready pod/web pod/demo-api --timeout=2m
K wait --for=condition=Available apiservice/v1.demo.oneinfra.io --timeout=2m
echo "\$ kubectl get --raw /api/v1/namespaces/default/pods/web:8080/proxy/"
K get --raw /api/v1/namespaces/default/pods/web:8080/proxy/
echo "\$ kubectl get --raw /apis/demo.oneinfra.io/v1"
K get --raw /apis/demo.oneinfra.io/v1; echo
cat <<MSG

The demo runs under $DEMO (logs: coordinator.log, */agent.log). Use it:
  export ONEINFRA_CONFIG=$DEMO/coordinator/admin.conf
  bin/oneinfra-coord describe cluster demo
  _output/bin/kubectl --kubeconfig $DEMO/demo.kubeconfig get all -A
Back it up and go back to a backup:
  bin/oneinfra-coord cluster backup demo --wait
  bin/oneinfra-coord cluster restore demo --backup ID --wait   # an ID of: cluster backups demo
Join the other worker (behind two NATs too):
  test/demo/join-worker.sh worker-2
Replace its CAs (Ready throughout; about 4 minutes), then fetch its kubeconfig again:
  bin/oneinfra-coord cluster rotate-ca demo --wait
  bin/oneinfra-coord cluster kubeconfig demo > $DEMO/demo.kubeconfig
Replace the coordinator's own CA (agents, workers and the admin.conf you run it with move over):
  bin/oneinfra-coord rotate-ca --wait
Stop and remove everything with: make demo-down
MSG
