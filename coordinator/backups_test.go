package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func testBackup(id, state string, ago time.Duration) *pb.Backup {
	return &pb.Backup{Id: id, State: state, Requested: timestamppb.New(testNow.Add(-ago))}
}

func TestBackupSchedule(t *testing.T) {
	spec := &pb.BackupSpec{Enabled: true, Schedule: "6h", Retain: 3}
	for _, c := range []struct {
		what     string
		spec     *pb.BackupSpec
		records  []*pb.Backup
		due      bool
		timedOut string
	}{
		{"none yet", spec, nil, true, ""},
		{"disabled", &pb.BackupSpec{Schedule: "6h", Retain: 3}, nil, false, ""},
		{"newest within the schedule", spec, []*pb.Backup{testBackup("a", BackupDone, 7*time.Hour), testBackup("b", BackupDone, 5*time.Hour)}, false, ""},
		{"newest past the schedule", spec, []*pb.Backup{testBackup("a", BackupDone, 7*time.Hour)}, true, ""},
		{"one pending", spec, []*pb.Backup{testBackup("a", BackupDone, 7*time.Hour), testBackup("p", BackupPending, time.Minute)}, false, ""},
		{"pending too long", spec, []*pb.Backup{testBackup("p", BackupPending, backupTimeout+time.Second)}, false, "p"},
		{"failed, retried soon", spec, []*pb.Backup{testBackup("f", BackupFailed, backupRetry+time.Second)}, true, ""},
		{"failed just now", spec, []*pb.Backup{testBackup("f", BackupFailed, time.Minute)}, false, ""},
	} {
		due, timedOut := backupDue(c.spec, c.records, testNow)
		if due != c.due || timedOut.GetId() != c.timedOut {
			t.Errorf("%s: due %v, timed out %q; want %v, %q", c.what, due, timedOut.GetId(), c.due, c.timedOut)
		}
	}
}

func TestBackupRetention(t *testing.T) {
	records := []*pb.Backup{
		testBackup("d1", BackupDone, 5*time.Hour), testBackup("d2", BackupDone, 4*time.Hour), testBackup("f1", BackupFailed, 3*time.Hour),
		testBackup("d3", BackupDone, 2*time.Hour), testBackup("f2", BackupFailed, time.Hour), testBackup("p", BackupPending, 0),
	}
	// With the new one, retain 3: d3 and d2 stay, and the newest failure.
	got := backupPrune(records, 3)
	slices.Sort(got)
	if !slices.Equal(got, []string{"d1", "f1"}) {
		t.Errorf("pruned %v, want d1 and f1", got)
	}
	if got := backupPrune(records, 1); len(got) != 4 {
		t.Errorf("retain 1 pruned %v, want every finished backup but the newest failure", got)
	}
}

// TestBackupFlow: `cluster backup` asks a Running replica's agent, whose
// assignment carries the task (target, object, the cluster's key); its
// report records the backup, with an event; another is refused a
// component that is not the one asked.
func TestBackupFlow(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "s1", t.TempDir())
	cfg.Bootstrap, cfg.BackupTarget = true, "file://"+t.TempDir()
	s := startServer(t, cfg)
	testutil.Eventually(t, 20*time.Second, "bootstrap", func() error { return s.ready() })
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	agent := registerHypervisor(t, s, op, "hv-1", false)
	if err := createCluster(ctx, op, "demo"); err != nil {
		t.Fatal(err)
	}
	if c := s.State().Cluster(nil, "demo"); c.Spec.GetBackup().GetSchedule() != "6h" || !c.Spec.Backup.Enabled {
		t.Fatalf("spec.backup on a coordinator with a target: %v", c.Spec.GetBackup())
	}
	if _, err := op.BackupCluster(ctx, &pb.BackupClusterRequest{Cluster: "demo"}); code(err) != codes.FailedPrecondition {
		t.Fatalf("a backup with no Running replica: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "placed", func() error {
		if s.State().Component(nil, "demo-cp-0") == nil {
			return errors.New("not yet")
		}
		return nil
	})
	running := &pb.ComponentReport{Component: "demo-cp-0", Status: &pb.ComponentStatus{State: vocab.StateRunning}}
	if _, err := agent.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "hv-1", Components: []*pb.ComponentReport{running}}); err != nil {
		t.Fatal(err)
	}
	before, err := agent.WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: "hv-1", WaitMs: 10})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := op.BackupCluster(ctx, &pb.BackupClusterRequest{Cluster: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	b := resp.Backup
	// The agent's watch wakes for it.
	start := time.Now()
	if w, err := agent.WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: "hv-1", MinIndex: before.Index, WaitMs: 5000}); err != nil || w.Index <= before.Index || time.Since(start) > 2*time.Second {
		t.Fatalf("the watch after a backup was asked: %v %v after %s", w, err, time.Since(start))
	}
	if b.Component != "demo-cp-0" || b.State != BackupPending {
		t.Fatalf("backup asked: %v", b)
	}
	as := getAssignment(t, agent, "hv-1", "demo-cp-0")
	if len(as.GetBackups()) != 1 || as.Backups[0].Id != b.Id || as.Backups[0].Target != cfg.BackupTarget ||
		len(as.Backups[0].Key) != 32 || as.Backups[0].Object != "demo/"+b.Id+".etcd.sealed" {
		t.Fatalf("the replica's backup tasks: %v", as.GetBackups())
	}
	if again, err := op.BackupCluster(ctx, &pb.BackupClusterRequest{Cluster: "demo"}); err != nil || again.Backup.Id != b.Id {
		t.Errorf("asking again while one is pending: %v %v", again, err)
	}
	running.Status.Backups = []*pb.BackupResult{{Id: b.Id, Ok: true, Revision: 42, Size: 1000}}
	if _, err := agent.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "hv-1", Components: []*pb.ComponentReport{running}}); err != nil {
		t.Fatal(err)
	}
	list, err := op.ListBackups(ctx, &pb.ListBackupsRequest{Cluster: "demo"})
	if err != nil || len(list.Backups) != 1 || list.Backups[0].State != BackupDone || list.Backups[0].Revision != 42 {
		t.Fatalf("backups after the report: %v %v", list, err)
	}
	got, err := op.Get(ctx, &pb.GetRequest{Kind: "clusters", Name: "demo"})
	if err != nil || len(got.Clusters[0].Status.GetBackups()) != 1 || got.Clusters[0].Status.Backups[0].Revision != 42 {
		t.Errorf("status.backups: %v %v", got.GetClusters(), err)
	}
	if as := getAssignment(t, agent, "hv-1", "demo-cp-0"); len(as.Backups) != 0 {
		t.Errorf("a backup taken is still asked for: %v", as.Backups)
	}
	events := s.State().Events(nil, "demo")
	if !slices.ContainsFunc(events, func(e *pb.Event) bool { return e.Reason == "BackedUp" }) {
		t.Error("no BackedUp event")
	}
	testutil.Eventually(t, 15*time.Second, "BackedUp condition", func() error {
		cond := resources.FindCondition(s.State().Cluster(nil, "demo").GetStatus().GetConditions(), CondBackedUp)
		if cond.GetStatus() != "True" || !strings.Contains(cond.GetMessage(), "etcd revision 42") {
			return fmt.Errorf("condition %v", cond)
		}
		return nil
	})
	checkRestoreFlow(t, s, op, agent, running, b.Id)
	running.Status.RestoreGeneration = 0

	// A failed one is an event and a condition too.
	resp, err = op.BackupCluster(ctx, &pb.BackupClusterRequest{Cluster: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	running.Status.Backups = []*pb.BackupResult{{Id: resp.Backup.Id, Message: strings.Repeat("x", maxAgentEventMessage+1)}}
	if _, err := agent.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "hv-1", Components: []*pb.ComponentReport{running}}); code(err) != codes.InvalidArgument {
		t.Errorf("a backup result with an oversized message: %v", err)
	}
	running.Status.Backups = []*pb.BackupResult{{Id: resp.Backup.Id, Message: "disk full"}}
	if _, err := agent.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "hv-1", Components: []*pb.ComponentReport{running}}); err != nil {
		t.Fatal(err)
	}
	events = s.State().Events(nil, "demo")
	if !slices.ContainsFunc(events, func(e *pb.Event) bool { return e.Reason == "BackupFailed" && e.Type == "Warning" }) {
		t.Error("no BackupFailed warning")
	}
	testutil.Eventually(t, 15*time.Second, "BackedUp False", func() error {
		cond := resources.FindCondition(s.State().Cluster(nil, "demo").GetStatus().GetConditions(), CondBackedUp)
		if cond.GetStatus() != "False" || cond.GetReason() != "BackupFailed" || !strings.Contains(cond.GetMessage(), "disk full") {
			return fmt.Errorf("condition %v", cond)
		}
		return nil
	})
}

// checkRestoreFlow: `cluster restore` of backup id asks every replica for
// it, with the member set and the cluster's key; the replica reporting
// its data of that generation, Running, finishes it, with an event. A
// backup not taken, or a second restore meanwhile, is refused.
func checkRestoreFlow(t *testing.T, s *Server, op pb.OperatorClient, agent pb.AgentClient, running *pb.ComponentReport, id string) {
	t.Helper()
	ctx := context.Background()
	if _, err := op.RestoreCluster(ctx, &pb.RestoreClusterRequest{Cluster: "demo", Backup: "nope"}); code(err) != codes.NotFound {
		t.Errorf("restoring a backup that does not exist: %v", err)
	}
	resp, err := op.RestoreCluster(ctx, &pb.RestoreClusterRequest{Cluster: "demo", Backup: id})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Restore; r.Generation != 1 || r.State != RestoreRestoring || r.Revision != 42 {
		t.Fatalf("restore: %v", r)
	}
	if _, err := op.RestoreCluster(ctx, &pb.RestoreClusterRequest{Cluster: "demo", Backup: id}); code(err) != codes.FailedPrecondition {
		t.Errorf("a second restore meanwhile: %v", err)
	}
	task := getAssignment(t, agent, "hv-1", "demo-cp-0").GetRestore()
	if task.GetGeneration() != 1 || task.Backup.GetId() != id || len(task.Backup.GetKey()) != 32 ||
		!strings.HasPrefix(task.InitialCluster, "demo-cp-0=https://") || task.Token != "demo-restore-1" {
		t.Fatalf("the replica's restore task: %v", task)
	}
	running.Status.Backups, running.Status.RestoreGeneration = nil, 1
	if _, err := agent.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "hv-1", Components: []*pb.ComponentReport{running}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "restore done", func() error {
		if r := s.State().Cluster(nil, "demo").GetStatus().GetRestore(); r.GetState() != RestoreDone {
			return fmt.Errorf("restore %v", r)
		}
		return nil
	})
	if !slices.ContainsFunc(s.State().Events(nil, "demo"), func(e *pb.Event) bool { return e.Reason == "Restored" }) {
		t.Error("no Restored event")
	}
	if task := getAssignment(t, agent, "hv-1", "demo-cp-0").GetRestore(); task != nil {
		t.Errorf("a restore done is still asked for: %v", task)
	}
}
