package coordinator

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
	"github.com/oneinfra/oneinfra/coordinator/keyring"
	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fsmApplier feeds commands to an FSM as Raft would, at growing indexes.
type fsmApplier struct {
	t      testing.TB
	fsm    *FSM
	index  uint64
	logged [][]byte // the entries applied, as Raft would store them
}

func (a *fsmApplier) apply(typ MessageType, msg proto.Message) error {
	a.t.Helper()
	data, err := a.fsm.encode(typ, msg)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	a.logged = append(a.logged, data)
	if resp := a.fsm.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data}); resp != nil {
		return resp.(error)
	}
	return nil
}

func (a *fsmApplier) mustApply(typ MessageType, msg proto.Message) {
	a.t.Helper()
	if err := a.apply(typ, msg); err != nil {
		a.t.Fatal(err)
	}
}

// testKeys seals the test FSMs' entries and snapshots: one keyring, as
// the servers of one coordinator share.
var testKeys = func() *keyring.Keyring {
	k, err := keyring.New()
	if err != nil {
		panic(err)
	}
	return k
}()

func newTestFSM(t testing.TB) *fsmApplier {
	return &fsmApplier{t: t, fsm: NewFSM(testKeys, slog.New(slog.NewTextHandler(io.Discard, nil)))}
}

var testNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func testCluster(t testing.TB, name string) (*pb.Cluster, *pb.ClusterPKI) {
	c := &pb.Cluster{Metadata: &pb.ObjectMeta{Name: name, CreationTimestamp: timestamppb.New(testNow)}, Spec: &pb.ClusterSpec{}}
	resources.DefaultCluster(c)
	p, err := pki.NewClusterPKI(name, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

func testHypervisor(name string, public bool) *pb.Hypervisor {
	h := &pb.Hypervisor{Metadata: &pb.ObjectMeta{Name: name}, Spec: &pb.HypervisorSpec{Address: "10.0.0.1", Public: public, PortRange: "30000-30100"},
		Status: &pb.HypervisorStatus{Health: resources.HealthAlive}}
	if public {
		h.Spec.PublicAddress = "203.0.113.1"
	}
	return h
}

// populate writes one of every kind of object.
func populate(a *fsmApplier) {
	c, p := testCluster(a.t, "demo")
	a.mustApply(InitType, &pb.InitCommand{Config: &pb.CoordinatorConfig{VpnPool: DefaultVPNPool, ClusterId: "x"}, Server: &pb.Server{Id: "s1"}})
	a.mustApply(ApplyResourcesType, &pb.ApplyResourcesCommand{Clusters: []*pb.Cluster{c}, Pki: []*pb.ClusterPKI{p},
		Events: []*pb.Event{state.Event("demo", "Normal", "Created", "created", testNow)}})
	a.mustApply(RegisterHypervisorType, &pb.RegisterHypervisorCommand{Hypervisor: testHypervisor("hv-1", false)})
	a.mustApply(UpsertTokenType, &pb.UpsertTokenCommand{Token: &pb.Token{Id: "abcdef", Kind: TokenHypervisor, Expires: timestamppb.New(testNow.Add(time.Hour))}})
	a.mustApply(PlaceType, &pb.PlaceCommand{Cluster: "demo", Time: timestamppb.New(testNow),
		Components: []*pb.Component{{Metadata: &pb.ObjectMeta{Name: "demo-cp-0"},
			Spec: &pb.ComponentSpec{Cluster: "demo", Role: resources.RoleControlPlane, Hypervisor: "hv-1", Ports: map[string]uint32{"apiserver": 30000}}}},
		Certs:  []*pb.ComponentCerts{{Component: "demo-cp-0", Certs: map[string]*pb.KeyPair{"x": {CertPem: []byte("c")}}}},
		Status: &pb.ClusterStatus{Phase: resources.PhaseProvisioning},
		Events: []*pb.Event{state.Event("demo", "Normal", "Placed", "placed", testNow), state.Event("demo", "Normal", "Placed", "again", testNow)},
	})
	a.mustApply(JoinWorkerType, &pb.JoinWorkerCommand{Peer: &pb.VPNPeer{Cluster: "demo", Name: "w-1", Address: "10.200.0.2",
		PodCidr: "10.244.0.0/24", PublicKey: "k", TokenId: "abcdef", Joined: timestamppb.New(testNow)}})
}

// snapshotRoundTrip persists the FSM's snapshot and restores it into a
// fresh FSM.
func snapshotRoundTrip(t *testing.T, from, to *FSM) {
	snap, err := from.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if err := to.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

func TestSnapshotRestoreIdentical(t *testing.T) {
	a := newTestFSM(t)
	populate(a)
	b := newTestFSM(t)
	snapshotRoundTrip(t, a.fsm, b.fsm)
	want, got := a.fsm.State().Snapshot(), b.fsm.State().Snapshot()
	if !proto.Equal(want, got) {
		t.Fatalf("restored store differs:\nwant %v\ngot  %v", want, got)
	}
	if len(got.Events) != 3 || len(got.Components) != 1 || got.Index != a.index {
		t.Errorf("restored %d events, %d components, index %d (want 3, 1, %d)", len(got.Events), len(got.Components), got.Index, a.index)
	}
	// Indexes and events order survive: a later write still appends.
	b.index = a.index
	b.mustApply(ClusterStatusType, &pb.ClusterStatusCommand{Cluster: "demo", Status: &pb.ClusterStatus{Phase: resources.PhaseReady},
		Events: []*pb.Event{state.Event("demo", "Normal", "Ready", "ready", testNow)}})
	events := b.fsm.State().Events(nil, "demo")
	if last := events[len(events)-1]; last.Reason != "Ready" {
		t.Errorf("last event after restore is %q, want Ready", last.Reason)
	}
}

func TestRestoreWakesWatchers(t *testing.T) {
	a := newTestFSM(t)
	populate(a)
	old := a.fsm.State()
	ws := memdb.NewWatchSet()
	ws.Add(old.AbandonCh())
	old.Clusters(ws)
	woke := make(chan bool)
	go func() { woke <- !ws.Watch(time.After(10 * time.Second)) }()

	empty := newTestFSM(t)
	snapshotRoundTrip(t, empty.fsm, a.fsm)
	if !<-woke {
		t.Fatal("a watcher of the old store was not woken by the restore")
	}
	if a.fsm.State() == old {
		t.Fatal("restore did not swap the store")
	}
	if a.fsm.State().Cluster(nil, "demo") != nil {
		t.Fatal("restored state still has the old cluster")
	}
}

func TestFSMRules(t *testing.T) {
	a := newTestFSM(t)
	populate(a)
	// A port allocated twice on one hypervisor is refused.
	err := a.apply(PlaceType, &pb.PlaceCommand{Cluster: "demo", Components: []*pb.Component{{Metadata: &pb.ObjectMeta{Name: "demo-cp-1"},
		Spec: &pb.ComponentSpec{Cluster: "demo", Role: resources.RoleControlPlane, Hypervisor: "hv-1", Ports: map[string]uint32{"etcd-client": 30000}}}}})
	if !errors.Is(err, ErrPortTaken) {
		t.Errorf("placing a taken port: %v, want ErrPortTaken", err)
	}
	if a.fsm.State().Component(nil, "demo-cp-1") != nil {
		t.Error("a refused placement was written")
	}
	// A VPN address, pod subnet or node name is never handed out twice.
	for _, p := range []*pb.VPNPeer{
		{Cluster: "demo", Name: "w-1", Address: "10.200.0.3", PodCidr: "10.244.1.0/24"},
		{Cluster: "demo", Name: "w-2", Address: "10.200.0.2", PodCidr: "10.244.1.0/24"},
		{Cluster: "demo", Name: "w-2", Address: "10.200.0.3", PodCidr: "10.244.0.0/24"},
	} {
		if err := a.apply(JoinWorkerType, &pb.JoinWorkerCommand{Peer: p}); !errors.Is(err, state.ErrConflict) {
			t.Errorf("joining %v: %v, want ErrConflict", p, err)
		}
	}
	if n := len(a.fsm.State().VPNPeers(nil, "demo")); n != 1 {
		t.Errorf("%d peers after refused joins", n)
	}
	// A hypervisor with components cannot go.
	if err := a.apply(DeleteHypervisorType, &pb.DeleteHypervisorCommand{Name: "hv-1"}); !errors.Is(err, ErrHypervisorInUse) {
		t.Errorf("deleting a busy hypervisor: %v", err)
	}
	// Deleting a cluster marks it and its components; it goes when its
	// agent reports the last component removed.
	a.mustApply(DeleteClusterType, &pb.DeleteClusterCommand{Name: "demo", Time: timestamppb.New(testNow)})
	c := a.fsm.State().Cluster(nil, "demo")
	if c == nil || c.Status.Phase != resources.PhaseDeleting || a.fsm.State().Component(nil, "demo-cp-0").Metadata.DeletionTimestamp == nil {
		t.Fatalf("cluster after delete: %v", c)
	}
	if err := a.apply(ReportStatusType, &pb.ReportStatusCommand{Hypervisor: "nope"}); err == nil {
		t.Error("a report from an unknown hypervisor was taken")
	}
	a.mustApply(RegisterHypervisorType, &pb.RegisterHypervisorCommand{Hypervisor: testHypervisor("hv-2", false)})
	a.mustApply(ReportStatusType, &pb.ReportStatusCommand{Hypervisor: "hv-2", Removed: []string{"demo-cp-0"}})
	if a.fsm.State().Component(nil, "demo-cp-0") == nil {
		t.Fatal("another hypervisor's report removed the component")
	}
	a.mustApply(ReportStatusType, &pb.ReportStatusCommand{Hypervisor: "hv-1", Removed: []string{"demo-cp-0"}, Time: timestamppb.New(testNow)})
	st := a.fsm.State()
	if st.Cluster(nil, "demo") != nil || st.ClusterPKI(nil, "demo") != nil || st.ComponentCerts(nil, "demo-cp-0") != nil || len(st.Events(nil, "demo")) != 0 ||
		len(st.VPNPeers(nil, "demo")) != 0 {
		t.Fatal("cluster, PKI, certificates or events left after the last component was removed")
	}
	if err := a.apply(DeleteHypervisorType, &pb.DeleteHypervisorCommand{Name: "hv-1"}); err != nil {
		t.Errorf("deleting an empty hypervisor: %v", err)
	}
}

func TestEventsBounded(t *testing.T) {
	a := newTestFSM(t)
	populate(a)
	for i := 0; i < state.MaxEventsPerCluster+20; i++ {
		a.mustApply(ClusterStatusType, &pb.ClusterStatusCommand{Cluster: "demo", Status: &pb.ClusterStatus{},
			Events: []*pb.Event{state.Event("demo", "Normal", "Tick", "tick", testNow)}})
	}
	if n := len(a.fsm.State().Events(nil, "demo")); n != state.MaxEventsPerCluster {
		t.Errorf("%d events kept, want %d", n, state.MaxEventsPerCluster)
	}
}

// TestSealedAtRest: no log entry and no snapshot holds a private key in
// plain text; entries of servers older than the keyring still apply, and
// one sealed by another coordinator's keyring stops the server rather
// than diverge.
func TestSealedAtRest(t *testing.T) {
	a := newTestFSM(t)
	populate(a)
	secret := []byte("PRIVATE KEY")
	if !bytes.Contains(mustMarshal(t, a.fsm.State().Snapshot()), secret) {
		t.Fatal("the test state holds no private key to look for")
	}
	for i, e := range a.logged {
		if bytes.Contains(e, secret) || MessageType(e[0]) != sealedType {
			t.Errorf("log entry %d is not sealed", i+1)
		}
	}
	snap, _ := a.fsm.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sink.Bytes(), secret) {
		t.Error("the Raft snapshot holds a private key in plain text")
	}

	plain, err := proto.Marshal(&pb.ClusterStatusCommand{Cluster: "demo", Status: &pb.ClusterStatus{Phase: resources.PhaseReady}})
	if err != nil {
		t.Fatal(err)
	}
	a.index++
	if resp := a.fsm.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: append([]byte{byte(ClusterStatusType)}, plain...)}); resp != nil {
		t.Fatalf("a plain entry of an older server: %v", resp)
	}
	if got := a.fsm.State().Cluster(nil, "demo").Status.Phase; got != resources.PhaseReady {
		t.Errorf("a plain entry of an older server did not apply: phase %s", got)
	}

	other, _ := keyring.New()
	foreign := append([]byte{byte(sealedType)}, other.Seal(append([]byte{byte(ClusterStatusType)}, plain...), sealedUse)...)
	defer func() {
		if recover() == nil {
			t.Error("an entry of another keyring applied")
		}
	}()
	a.fsm.Apply(&raft.Log{Index: a.index + 1, Type: raft.LogCommand, Data: foreign})
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A heartbeat (a report with nothing new) records when the hypervisor was
// seen and changes neither the hypervisors nor the components table, so
// no watch of them wakes; last_seen survives a snapshot and its restore.
func TestHeartbeatChangesNoRow(t *testing.T) {
	a := newTestFSM(t)
	populate(a)
	running := &pb.ComponentStatus{State: vocab.StateRunning}
	report := func(at time.Time) {
		a.mustApply(ReportStatusType, &pb.ReportStatusCommand{Hypervisor: "hv-1", Time: timestamppb.New(at),
			Components: []*pb.Component{{Metadata: &pb.ObjectMeta{Name: "demo-cp-0"}, Status: running}}})
	}
	report(testNow)
	st := a.fsm.State()
	ws := memdb.NewWatchSet()
	st.Hypervisor(ws, "hv-1")
	st.Hypervisors(ws)
	st.ComponentsOnHypervisor(ws, "hv-1")
	before := st.Index(state.TableHypervisors, state.TableComponents)
	later := testNow.Add(30 * time.Second)
	report(later)
	if woke := !ws.Watch(time.After(100 * time.Millisecond)); woke {
		t.Error("a heartbeat woke a watch of the hypervisor or its components")
	}
	if after := a.fsm.State().Index(state.TableHypervisors, state.TableComponents); after != before {
		t.Errorf("a heartbeat moved the hypervisors and components tables from index %d to %d", before, after)
	}
	if seen := a.fsm.State().Hypervisor(nil, "hv-1").GetStatus().GetLastSeen().AsTime(); !seen.Equal(later) {
		t.Errorf("last seen %v, want the heartbeat's %v", seen, later)
	}
	// A report that moves the trust generation writes the row, with the
	// report's time.
	latest := later.Add(30 * time.Second)
	a.mustApply(ReportStatusType, &pb.ReportStatusCommand{Hypervisor: "hv-1", Time: timestamppb.New(latest), TrustGeneration: 2})
	h := a.fsm.State().Hypervisor(nil, "hv-1")
	if seen := h.GetStatus().GetLastSeen().AsTime(); !seen.Equal(latest) || h.GetStatus().GetTrustGeneration() != 2 {
		t.Errorf("after a report of trust generation 2: generation %d, last seen %v, want %v", h.GetStatus().GetTrustGeneration(), seen, latest)
	}
	later = latest
	restored := state.Restore(a.fsm.State().Snapshot())
	if seen := restored.Hypervisor(nil, "hv-1").GetStatus().GetLastSeen().AsTime(); !seen.Equal(later) {
		t.Errorf("after a snapshot's restore last seen is %v, want %v", seen, later)
	}
	if hs := restored.Hypervisors(nil); len(hs) != 1 || !hs[0].GetStatus().GetLastSeen().AsTime().Equal(later) {
		t.Errorf("restored hypervisors %v lack their last seen", hs)
	}
}
