#!/usr/bin/env bash
# The whole system on one machine, as far as it goes today: three
# coordinator servers on loopback (bootstrap, two joins), a cluster applied
# through a follower, the leader killed with -9, and the survivors still
# answering. `make demo-down` stops it and removes its files.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMO=${DEMO_DIR:-/tmp/oneinfra-demo}
BIN=$PWD/bin
C() { "$BIN/oneinfra-coord" --config "$DEMO/admin.conf" "$@"; }

if [ -e "$DEMO" ]; then
  echo "$DEMO exists: run 'make demo-down' first" >&2
  exit 1
fi
mkdir -p "$DEMO"
start() { # ID N [serve flags...]
  local id=$1 n=$2; shift 2
  "$BIN/oneinfra-coord" serve --id "$id" --data-dir "$DEMO/$id" \
    --api-addr "127.0.0.1:${n}7443" --raft-addr "127.0.0.1:${n}7444" --metrics-addr "127.0.0.1:${n}7480" \
    "$@" >>"$DEMO/$id.log" 2>&1 &
  echo $! >"$DEMO/$id.pid"
  disown
}
wait_ok() { for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; "$@"; }

echo "== bootstrapping coordinator server s1"
start s1 1 --bootstrap
wait_ok test -s "$DEMO/s1/admin.conf"
cp "$DEMO/s1/admin.conf" "$DEMO/admin.conf"
wait_ok C members
eval "$(C token create --kind server | awk '/^token:/{print "TOKEN="$2} /^ca-hash:/{print "HASH="$2}')"
echo "== joining s2 and s3 with a server token (CA pinned by $HASH)"
start s2 2 --join 127.0.0.1:17443 --token "$TOKEN" --ca-hash "$HASH"
start s3 3 --join 127.0.0.1:17443 --token "$TOKEN" --ca-hash "$HASH"
wait_ok bash -c "[ \$('$BIN/oneinfra-coord' --config '$DEMO/admin.conf' members | grep -c Voter) = 3 ]"
C members
C get clusters >/dev/null # teaches admin.conf every server

echo "== applying examples/cluster.yaml"
C apply -f examples/cluster.yaml
sleep 1
C describe cluster demo

leader=$(C members | awk '$4=="*"{print $1}')
echo "== kill -9 of the leader ($leader)"
kill -9 "$(cat "$DEMO/$leader.pid")"
C get clusters
C cluster create second --replicas 1
C get clusters -o wide
echo "== restarting $leader from its data dir"
n=${leader#s}
start "$leader" "$n"
sleep 3
C members
cat <<MSG

The coordinator runs in $DEMO (logs: $DEMO/s*.log). Try:
  export ONEINFRA_CONFIG=$DEMO/admin.conf
  bin/oneinfra-coord get clusters
  bin/oneinfra-coord describe cluster demo
Clusters stay Pending until hypervisor agents register (next milestone).
Stop everything with: make demo-down
MSG
