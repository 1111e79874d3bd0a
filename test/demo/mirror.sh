#!/usr/bin/env bash
# The demo's image mirror, as an air gap has one: a registry (distribution,
# _output/bin/registry) at 10.214.0.1:5000 on the lab's public network,
# plain HTTP, that every lab host's containerd pulls through (a hosts.toml
# in its certs.d). test/demo/mirror.sh TARBALL... starts it unless it
# answers (a process of the demo: make demo-down stops it) and pushes each
# image under the mirror's name: its upstream one with the registry
# replaced by the mirror (registry.k8s.io/X and docker.io/library/X are
# MIRROR/X), which is what `serve --image-repository MIRROR` and the e2e
# suite's KUBE_TEST_REPO_LIST name.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMO=/run/oilab
MIRROR=10.214.0.1:5000
[ -d "$DEMO" ] || { echo "no lab at $DEMO: make demo" >&2; exit 1; }

for dir in "$DEMO"/*/containerd; do
  mkdir -p "$dir/certs.d/$MIRROR"
  printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$MIRROR" "$MIRROR" >"$dir/certs.d/$MIRROR/hosts.toml"
done

if ! curl -sf "http://$MIRROR/v2/" >/dev/null; then
  mkdir -p "$DEMO/registry"
  cat >"$DEMO/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DEMO/registry/data
http:
  addr: $MIRROR
YAML
  _output/bin/registry serve "$DEMO/registry/config.yml" >>"$DEMO/registry.log" 2>&1 &
  echo $! >"$DEMO/proc-$!.pid"
  disown
  for _ in $(seq 50); do curl -sf "http://$MIRROR/v2/" >/dev/null && break; sleep 0.2; done
  curl -sf "http://$MIRROR/v2/" >/dev/null || { cat "$DEMO/registry.log" >&2; exit 1; }
fi

# Pushed from hv-1's containerd, which forgets the mirror's name again so
# that it pulls through the mirror like the other hosts.
sock=$DEMO/hv-1/containerd/containerd.sock
for tar in "$@"; do
  ref=$(awk -v key="$(basename "$tar" .tar)" '$1 == key {print $2}' test/images/images.txt)
  [ -n "$ref" ] || { echo "$tar: not in test/images/images.txt" >&2; exit 1; }
  name=${ref#registry.k8s.io/}
  mirrored=$MIRROR/${name#docker.io/library/}
  ctr -a "$sock" -n k8s.io images import "$tar" >/dev/null
  ctr -a "$sock" -n k8s.io images tag --force "$ref" "$mirrored" >/dev/null
  ctr -a "$sock" -n k8s.io images push --plain-http "$mirrored" >/dev/null
  ctr -a "$sock" -n k8s.io images rm "$mirrored" >/dev/null
done
