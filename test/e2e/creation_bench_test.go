//go:build bench

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
)

// idleAfter is how long a new control plane settles before its memory is
// read.
const idleAfter = time.Minute

// TestCreationBench is make bench's part in the lab: the time from
// `cluster create` to Ready through the ingress, for one replica and for
// three, each against etcd and kube-apiserver started by hand just before;
// and the idle memory of a single-replica control plane, by component, and
// of the agents. Its rows go to the file ONEINFRA_BENCH_ROWS names (one per
// line: measure, figure, goal, baseline, tab-separated), which make bench
// prints in its table.
func TestCreationBench(t *testing.T) {
	rowsFile := os.Getenv("ONEINFRA_BENCH_ROWS")
	if rowsFile == "" {
		t.Fatal("ONEINFRA_BENCH_ROWS: want the file the table's rows go to (make bench sets it)")
	}
	s := startSystem(t, controlPlaneHosts, 1)
	var rows []string
	row := func(what, figure, goal, baseline string) {
		rows = append(rows, strings.Join([]string{what, figure, goal, baseline}, "\t"))
		t.Logf("%s: %s (goal %s; %s)", what, figure, goal, baseline)
	}
	create := func(name string, replicas int, goal float64) {
		baseline := handStartedAPI(t)
		began := time.Now()
		out, err := cli(s.config, "", "cluster", "create", name, "--replicas", fmt.Sprint(replicas), "--wait", "--timeout", "10m")
		if err != nil {
			t.Fatalf("cluster create %s: %v\n%s", name, err, out)
		}
		ready := time.Since(began)
		row(fmt.Sprintf("cluster create → Ready through the ingress (%d replica(s))", replicas),
			fmt.Sprintf("%.1fs (%.1f× baseline)", ready.Seconds(), ready.Seconds()/baseline.Seconds()),
			fmt.Sprintf("≤ %.1f× baseline", goal),
			fmt.Sprintf("etcd + kube-apiserver started by hand: %.1fs", baseline.Seconds()))
	}

	create("one", 1, 1.5)
	time.Sleep(idleAfter)
	row("idle control plane memory (RSS, 1 replica)", controlPlaneMemory(t, s, "one").String(), "≤ 300 MiB",
		fmt.Sprintf("settled %s after Ready", idleAfter))
	row("agent memory (RSS)", agentsRSS(t, s), "", "4 lab hypervisors, one cluster")
	if out, err := cli(s.config, "", "delete", "cluster", "one", "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}

	create("three", 3, 2)
	startedTogether(t, s, "three", 3)
	if err := os.WriteFile(rowsFile, []byte(strings.Join(rows, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// agentsRSS is the resident memory of each lab host's agent.
func agentsRSS(t *testing.T, s *system) string {
	var parts []string
	for _, p := range processes() {
		if len(p.args) < 4 || filepath.Base(p.args[0]) != "oneinfra-agent" || p.args[2] != "--name" {
			continue
		}
		if kb, err := testutil.RSSKiB(p.pid); err == nil {
			parts = append(parts, fmt.Sprintf("%s %d MiB", p.args[3], kb/1024))
		}
	}
	if len(parts) == 0 {
		t.Fatal("no agent process found")
	}
	return strings.Join(parts, ", ")
}
