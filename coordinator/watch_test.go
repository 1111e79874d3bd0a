package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A watch with the digest of what its agent holds wakes only when that
// hypervisor's assignments change: another hypervisor's heartbeats and
// status reports (even of the same cluster's ingress) wake it 0 times; a
// change to its replica (the cluster scaled) wakes it at once.
func TestWatchWakesOnlyForOwnAssignments(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	agents := map[string]pb.AgentClient{}
	for _, n := range []string{"hv-a", "hv-b", "hv-c"} {
		agents[n] = registerHypervisor(t, s, op, n, false)
	}
	agents["pub"] = registerHypervisor(t, s, op, "pub", true)
	apply := func(replicas int32) {
		t.Helper()
		if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
			Metadata: &pb.ObjectMeta{Name: "demo"}, Spec: &pb.ClusterSpec{ControlPlane: &pb.ControlPlaneSpec{Replicas: ptr(replicas)}}}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	apply(1)
	var mine, ingress *pb.Component
	testutil.Eventually(t, 10*time.Second, "placed", func() error {
		mine, ingress = nil, nil
		for _, c := range s.State().ComponentsOfCluster(nil, "demo") {
			if c.Spec.Role == resources.RoleIngress {
				ingress = c
			} else {
				mine = c
			}
		}
		if mine == nil || ingress == nil {
			return fmt.Errorf("not placed")
		}
		return nil
	})
	hv := mine.Spec.Hypervisor
	first, err := agents[hv].WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: hv, WaitMs: 10})
	if err != nil || first.Digest == "" {
		t.Fatalf("first watch: %v, digest %q", err, first.GetDigest())
	}

	// reporting has the named hypervisors report every 50ms (pub with
	// the ingress Running) until the returned func is called, which
	// returns how many reports they made.
	reporting := func(names ...string) func() int {
		stop := make(chan struct{})
		reports := make(chan int)
		go func() {
			n := 0
			defer func() { reports <- n }()
			for {
				for _, name := range names {
					req := &pb.ReportStatusRequest{Hypervisor: name, Time: timestamppb.Now()}
					if name == "pub" {
						req.Components = []*pb.ComponentReport{{Component: ingress.Metadata.Name, Status: &pb.ComponentStatus{State: vocab.StateRunning,
							Message: fmt.Sprintf("report %d", n), Conditions: []*pb.Condition{{Type: vocab.CondAPIReachable, Status: "True", Message: "ok"}}}}}
					}
					if _, err := agents[name].ReportStatus(ctx, req); err != nil {
						t.Error(err)
						return
					}
					n++
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		return func() int { close(stop); return <-reports }
	}
	var others, strangers []string
	for name := range agents {
		if name != hv {
			others = append(others, name)
			if name != ingress.Spec.Hypervisor {
				strangers = append(strangers, name)
			}
		}
	}

	// Hypervisors that hold nothing of its cluster do not even wake the
	// watch on the server: it reads none of their rows.
	wakes := promtest.ToFloat64(s.metrics.watchWakes)
	stop := reporting(strangers...)
	if _, err := agents[hv].WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: hv, MinIndex: first.Index, WaitMs: 1500, KnownDigest: first.Digest}); err != nil {
		t.Fatal(err)
	}
	n := stop()
	if woke := promtest.ToFloat64(s.metrics.watchWakes) - wakes; n == 0 || woke != 0 {
		t.Fatalf("%d reports of hypervisors outside the cluster woke the watch %v times on the server; want 0", n, woke)
	}
	t.Logf("%d reports of %d hypervisors outside the cluster woke the watch 0 times on the server", n, len(strangers))

	// Every other hypervisor, the ingress's among them, wakes the agent 0
	// times.
	stop = reporting(others...)
	start := time.Now()
	w, err := agents[hv].WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: hv, MinIndex: first.Index, WaitMs: 3000, KnownDigest: first.Digest})
	waited := time.Since(start)
	n = stop()
	if err != nil {
		t.Fatal(err)
	}
	if waited < 2900*time.Millisecond || w.Digest != first.Digest {
		t.Fatalf("the watch woke after %s (digest changed: %v) through %d reports of other hypervisors; want it to wait out its 3s", waited, w.Digest != first.Digest, n)
	}
	t.Logf("%d reports of other hypervisors woke the watch 0 times in %s (state index %d → %d)", n, waited.Round(time.Millisecond), first.Index, w.Index)

	// A change of its own assignment wakes it.
	woke := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		r, err := agents[hv].WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: hv, MinIndex: w.Index, WaitMs: 10000, KnownDigest: w.Digest})
		if err != nil || r.Digest == w.Digest {
			woke <- 0
			return
		}
		woke <- time.Since(start)
	}()
	time.Sleep(100 * time.Millisecond)
	apply(3)
	if d := <-woke; d == 0 || d > 5*time.Second {
		t.Fatalf("scaling the cluster did not wake its replica's watch in time (%s)", d)
	}
}
