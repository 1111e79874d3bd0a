#!/usr/bin/env bash
# The upstream Kubernetes e2e suite (e2e.test of the cluster's version, run
# by ginkgo) against the cluster of `make demo`, whose two workers sit
# behind two NATs each: `make conformance [FOCUS=REGEX] [SKIP=REGEX]`.
#
# Uses the running demo, or brings one up and removes it at the end. Joins
# both workers and pushes the suite's images (built here, arguments: their
# tarballs) to the demo's image mirror (test/demo/mirror.sh, a registry at
# 10.214.0.1:5000 that the lab's containerds pull through), which the
# suite is pointed at with KUBE_TEST_REPO_LIST: nothing outside is
# reached. Runs the suite: parallel specs first, [Serial] ones after them
# on one process (ginkgo's order). Ends with ginkgo's summary and the line
# "N passed, N failed, N skipped"; the JUnit report and the whole log stay
# in _output/conformance/.
set -euo pipefail
cd "$(dirname "$0")/../.."
FOCUS=${FOCUS:-'\[Conformance\]'}
SKIP=${SKIP:-}
PROCS=${PROCS:-4}
PREFIX=oilab
DEMO=/run/$PREFIX
OUT=$PWD/_output/conformance
MIRROR=10.214.0.1:5000
K() { "$PWD/_output/bin/kubectl" --kubeconfig "$DEMO/demo.kubeconfig" "$@"; }

rm -rf "$OUT"
mkdir -p "$OUT"
if [ ! -e "$DEMO" ]; then
  echo "== no demo running: make demo (log: $OUT/demo.log); removed again at the end"
  trap 'echo "== removing the demo this run brought up"; test/demo/demo-down.sh >/dev/null' EXIT
  if ! test/demo/demo.sh >"$OUT/demo.log" 2>&1; then
    tail -n 30 "$OUT/demo.log" >&2
    exit 1
  fi
fi
for w in worker-1 worker-2; do
  if [ "$(K get node "$w" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" != True ]; then
    echo "== joining $w"
    test/demo/join-worker.sh "$w" >"$OUT/join-$w.log" 2>&1 || { cat "$OUT/join-$w.log" >&2; exit 1; }
  fi
done

echo "== the suite's images in the demo's mirror at $MIRROR (test/demo/mirror.sh)"
test/demo/mirror.sh "$@"
cat >"$OUT/repo-list.yaml" <<YAML
promoterE2eRegistry: $MIRROR/e2e-test-images
gcRegistry: $MIRROR
gcEtcdRegistry: $MIRROR
YAML
K get nodes -o wide

echo "== ginkgo --procs=$PROCS --focus='$FOCUS'${SKIP:+ --skip='$SKIP'} e2e.test (log: $OUT/e2e.log)"
began=$SECONDS
set +e
KUBE_TEST_REPO_LIST=$OUT/repo-list.yaml PATH="$PWD/_output/bin:$PATH" _output/bin/ginkgo --procs="$PROCS" --focus="$FOCUS" ${SKIP:+--skip="$SKIP"} \
  --timeout=24h --no-color _output/bin/e2e.test -- \
  --kubeconfig="$DEMO/demo.kubeconfig" --provider=skeleton --kubectl-path="$PWD/_output/bin/kubectl" \
  --report-dir="$OUT" --disable-log-dump >"$OUT/e2e.log" 2>&1
rc=$?
set -e
# ginkgo's summary: the failures, then "Ran N of M Specs".
sed -n '/^Summarizing [0-9]* Failure/,$p' "$OUT/e2e.log" | grep -av '^Test Suite Failed' || true
grep -aE '^Ran [0-9]+ of [0-9]+ Specs|Passed \| [0-9]+ Failed' "$OUT/e2e.log" || tail -n 30 "$OUT/e2e.log"
junit=$OUT/junit_01.xml
if [ ! -s "$junit" ]; then
  echo "no JUnit report ($junit): see $OUT/e2e.log" >&2
  exit 1
fi
# The specs ("[It] ..."; the suites' set-up and reports are testcases too).
# Those the focus left out are in the report as skipped without a reason;
# the ones counted skipped here skipped themselves (a feature or provider
# this cluster lacks).
specs() { grep -aE "<testcase name=\"\[It\][^\"]*\" [^>]*status=\"($1)\"" "$junit"; }
passed=$(specs passed | grep -c . || true)
failed=$(specs 'failed|panicked|interrupted|timedout|aborted' | grep -c . || true)
skipped=$(grep -aA1 '<testcase name="\[It\][^"]*" [^>]*status="skipped"' "$junit" | grep -c '<skipped message="skipped - ' || true)
echo "ran in $(((SECONDS - began) / 60))m$(((SECONDS - began) % 60))s; JUnit report: $junit"
echo "$passed passed, $failed failed, $skipped skipped"
exit $rc
