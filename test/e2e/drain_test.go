package e2e

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/test/lab"
)

// prober probes a cluster's API through its ingress every 0.5s until
// stopped, logging each failure.
type prober struct {
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	n      int
	failed []string
}

func probe(t *testing.T, cluster, kubeconfig string) *prober {
	return probeWith(t, cluster, func() error {
		_, err := kubectl(kubeconfig, "get", "--raw", "/readyz")
		return err
	})
}

// probeWith probes with check every 0.5s until stopped, or the test ends.
func probeWith(t *testing.T, cluster string, check func() error) *prober {
	p := &prober{done: make(chan struct{})}
	t.Cleanup(func() { p.stop() })
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case <-p.done:
				return
			case <-time.After(500 * time.Millisecond):
			}
			p.n++
			if err := check(); err != nil {
				at := time.Now().UTC().Format("15:04:05.000")
				p.failed = append(p.failed, at)
				t.Logf("the API of %s through its ingress failed at %s: %v", cluster, at, err)
			}
		}
	}()
	return p
}

// stop ends the probes and returns how many ran and the times of those
// that failed.
func (p *prober) stop() (int, []string) {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
	return p.n, p.failed
}

// drains is how many drains TestDrainLoop runs: $ONEINFRA_DRAINS, or 6
// (make drain-soak runs 20).
func drains(t *testing.T) int {
	if v := os.Getenv("ONEINFRA_DRAINS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("ONEINFRA_DRAINS=%q: want a positive number", v)
		}
		return n
	}
	return 6
}

// TestDrainLoop drains, uncordons and drains again the hosts of a
// one-replica and a three-replica cluster that share four private
// hypervisors, many times in a row: each drain moves the replicas there
// make-before-break (etcd grows by one and shrinks back), so every
// handover of the ingress and of etcd membership is exercised, with
// drained hosts reused at once. The API of both clusters is probed through
// the ingress every 0.5s throughout: no probe may fail, no component may
// be left Failed, and the data stays.
func TestDrainLoop(t *testing.T) {
	s := startSystem(t, drainHosts, 1)
	for name, replicas := range map[string]string{"one": "1", "three": "3"} {
		if out, err := cli(s.config, "", "cluster", "create", name, "--replicas", replicas, "--wait", "--timeout", "10m"); err != nil {
			d, _ := cli(s.config, "", "describe", "cluster", name)
			t.Fatalf("cluster create %s: %v\n%s\n%s", name, err, out, d)
		}
	}
	kc := map[string]string{"one": writeKubeconfig(t, s, "one"), "three": writeKubeconfig(t, s, "three")}
	for name, config := range kc {
		if _, err := kubectl(config, "create", "secret", "generic", "s1", "--from-literal=k="+name); err != nil {
			t.Fatal(err)
		}
	}
	if os.Getenv("ONEINFRA_DRAIN_LOAD") != "" {
		// A loaded machine: a busy process on each core.
		for range 2 {
			busy := exec.Command("sh", "-c", "while :; do :; done")
			if err := busy.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { busy.Process.Kill(); busy.Wait() })
		}
	}
	probes := map[string]*prober{"one": probe(t, "one", kc["one"]), "three": probe(t, "three", kc["three"])}
	n := drains(t)
	var took []time.Duration
	for i := range n {
		from := drainTarget(t, s, i)
		began := time.Now()
		out, err := cli(s.config, "", "hypervisor", "drain", from, "--wait", "--timeout", "5m")
		if err != nil || !strings.Contains(out, "drained") {
			d1, _ := cli(s.config, "", "describe", "cluster", "one")
			d3, _ := cli(s.config, "", "describe", "cluster", "three")
			t.Fatalf("drain %d of %s: %v\n%s\n%s\n%s", i+1, from, err, out, d1, d3)
		}
		took = append(took, time.Since(began))
		for _, c := range components(t, s) {
			if c.Spec.Hypervisor == from {
				t.Errorf("drain %d: %s still on the drained %s", i+1, c.Metadata.Name, from)
			}
		}
		noneFailed(t, s, fmt.Sprintf("after drain %d", i+1))
		if _, err := cli(s.config, "", "hypervisor", "uncordon", from); err != nil {
			t.Fatal(err)
		}
		t.Logf("drain %d of %d: %s in %.1fs", i+1, n, from, took[i].Seconds())
	}
	for name, p := range probes {
		total, failed := p.stop()
		t.Logf("%s: %d API probes through the ingress during %d drains, %d failed %v", name, total, n, len(failed), failed)
		if len(failed) > 0 {
			t.Errorf("%s: %d of %d API probes failed during the drains", name, len(failed), total)
		}
	}
	slices.Sort(took)
	t.Logf("%d drains: median %.1fs, slowest %.1fs", n, took[len(took)/2].Seconds(), took[len(took)-1].Seconds())
	for name, config := range kc {
		if got, err := kubectl(config, "get", "secret", "s1", "-o", "jsonpath={.data.k}"); err != nil || got != base64.StdEncoding.EncodeToString([]byte(name)) {
			t.Errorf("%s: the secret after the drains: %q %v", name, got, err)
		}
	}
	// Each cluster's etcd has exactly its replicas as members.
	testutil.Eventually(t, time.Minute, "etcd members", func() error {
		for name, want := range map[string]int{"one": 1, "three": 3} {
			out, err := etcdctl(t, s, name, "member", "list")
			if err != nil {
				return err
			}
			if got := strings.Count(strings.TrimSpace(out), "\n") + 1; got != want || strings.Contains(out, "unstarted") {
				return fmt.Errorf("%s: %d etcd members, want %d:\n%s", name, got, want, out)
			}
		}
		return nil
	})
}

// drainHosts are four private hypervisors, so that a drain of a host of
// the three-replica cluster has somewhere to go, and a public one.
var drainHosts = []lab.HostSpec{{Name: "hv-1"}, {Name: "hv-2"}, {Name: "hv-3"}, {Name: "hv-4"}, {Name: "pub-1", Public: true}}

// drainTarget picks the hypervisor the i-th drain empties: in turn the
// host of the one-replica cluster's replica (which most often also holds a
// replica of the other) and a host of the three-replica cluster that does
// not hold it.
func drainTarget(t *testing.T, s *system, i int) string {
	t.Helper()
	var one string
	var three []string
	for _, c := range components(t, s) {
		if c.Spec.Role != "control-plane" {
			continue
		}
		if strings.HasPrefix(c.Metadata.Name, "one-") {
			one = c.Spec.Hypervisor
		} else {
			three = append(three, c.Spec.Hypervisor)
		}
	}
	if i%2 == 0 {
		return one
	}
	slices.Sort(three)
	for _, h := range three {
		if h != one {
			return h
		}
	}
	return three[0]
}

// noneFailed fails the test when a component reports Failed.
func noneFailed(t *testing.T, s *system, when string) {
	t.Helper()
	out, err := cli(s.config, "", "get", "components")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "Failed") {
		t.Errorf("%s, a component is Failed:\n%s", when, out)
	}
}
