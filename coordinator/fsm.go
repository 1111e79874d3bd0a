package coordinator

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/oneinfra/oneinfra/coordinator/keyring"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MessageType is the first byte of every Raft log entry. Types are only
// ever appended: an existing value never changes meaning.
type MessageType uint8

const (
	InitType MessageType = iota
	UpsertServerType
	RemoveServerType
	ApplyResourcesType
	DeleteClusterType
	DeleteHypervisorType
	UpsertTokenType
	RevokeTokenType
	RegisterHypervisorType
	PlaceType
	ReportStatusType
	ClusterStatusType
	JoinWorkerType
	RemovePeerType
	SetHealthType
	SetGossipKeyType
	IssueCertsType
	RevokeCertsType
	PruneType
	DeleteComponentType
	BackupType
	RestoreType
	SetPKIType
	WorkerTrustType
	SetTrustType
	SubmitKeysType
)

// sealedType marks a log entry sealed with the keyring: what follows it is
// a sealed entry of one of the types above. Entries of servers older than
// the keyring are not sealed, and still apply.
const sealedType MessageType = 0xff

// sealedUse is the keyring use of log entries.
const sealedUse = "raft-log"

// Errors an Apply can return; they reach the caller of raftApply.
var (
	ErrHypervisorInUse = errors.New("hypervisor still has components")
	ErrPortTaken       = errors.New("host port already allocated")
	// ErrStaleHealth refuses a health decision made on a report that a
	// newer one has replaced meanwhile.
	ErrStaleHealth = errors.New("hypervisor reported since the health decision")
)

// FSM applies committed log entries to the state store. Apply is
// deterministic: everything it writes comes from the entry.
type FSM struct {
	mu     sync.RWMutex
	store  *state.Store
	keys   *keyring.Keyring // seals entries and snapshots
	logger *slog.Logger
}

// NewFSM returns an FSM over an empty store whose entries and snapshots
// keys seals.
func NewFSM(keys *keyring.Keyring, logger *slog.Logger) *FSM {
	return &FSM{store: state.New(), keys: keys, logger: logger}
}

// State returns the current store. After a restore it is a new one; the
// old one's AbandonCh is closed.
func (f *FSM) State() *state.Store {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.store
}

// encode makes a sealed log entry.
func (f *FSM) encode(t MessageType, msg proto.Message) ([]byte, error) {
	b, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encoding command %d: %w", t, err)
	}
	return append([]byte{byte(sealedType)}, f.keys.Seal(append([]byte{byte(t)}, b...), sealedUse)...), nil
}

// commands maps each type to a constructor of its payload and its apply.
func (f *FSM) handler(t MessageType) (proto.Message, func(*state.Txn, proto.Message) error) {
	switch t {
	case InitType:
		return &pb.InitCommand{}, f.applyInit
	case UpsertServerType:
		return &pb.UpsertServerCommand{}, f.applyUpsertServer
	case RemoveServerType:
		return &pb.RemoveServerCommand{}, f.applyRemoveServer
	case ApplyResourcesType:
		return &pb.ApplyResourcesCommand{}, f.applyResources
	case DeleteClusterType:
		return &pb.DeleteClusterCommand{}, f.applyDeleteCluster
	case DeleteHypervisorType:
		return &pb.DeleteHypervisorCommand{}, f.applyDeleteHypervisor
	case UpsertTokenType:
		return &pb.UpsertTokenCommand{}, f.applyUpsertToken
	case RevokeTokenType:
		return &pb.RevokeTokenCommand{}, f.applyRevokeToken
	case RegisterHypervisorType:
		return &pb.RegisterHypervisorCommand{}, f.applyRegisterHypervisor
	case PlaceType:
		return &pb.PlaceCommand{}, f.applyPlace
	case ReportStatusType:
		return &pb.ReportStatusCommand{}, f.applyReportStatus
	case ClusterStatusType:
		return &pb.ClusterStatusCommand{}, f.applyClusterStatus
	case JoinWorkerType:
		return &pb.JoinWorkerCommand{}, f.applyJoinWorker
	case RemovePeerType:
		return &pb.RemovePeerCommand{}, f.applyRemovePeer
	case SetHealthType:
		return &pb.SetHealthCommand{}, f.applySetHealth
	case SetGossipKeyType:
		return &pb.SetGossipKeyCommand{}, f.applySetGossipKey
	case IssueCertsType:
		return &pb.IssueCertsCommand{}, f.applyIssueCerts
	case RevokeCertsType:
		return &pb.RevokeCertsCommand{}, f.applyRevokeCerts
	case PruneType:
		return &pb.PruneCommand{}, f.applyPrune
	case DeleteComponentType:
		return &pb.DeleteComponentCommand{}, f.applyDeleteComponent
	case BackupType:
		return &pb.BackupCommand{}, f.applyBackup
	case RestoreType:
		return &pb.RestoreCommand{}, f.applyRestore
	case SetPKIType:
		return &pb.SetPKICommand{}, f.applySetPKI
	case WorkerTrustType:
		return &pb.WorkerTrustCommand{}, f.applyWorkerTrust
	case SetTrustType:
		return &pb.SetTrustCommand{}, f.applySetTrust
	case SubmitKeysType:
		return &pb.SubmitKeysCommand{}, f.applySubmitKeys
	}
	return nil, nil
}

// Apply implements raft.FSM. It returns nil or an error.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	data := l.Data
	if MessageType(data[0]) == sealedType {
		var err error
		if data, err = f.keys.Open(data[1:], sealedUse); err != nil || len(data) == 0 {
			// Every server applies every entry: one it cannot read would
			// make it diverge from the others.
			panic(fmt.Sprintf("fsm: unsealing the entry at index %d: %v (is DATA-DIR/%s this coordinator's?)", l.Index, err, keyring.FileName))
		}
	}
	t := MessageType(data[0])
	msg, apply := f.handler(t)
	if msg == nil {
		// An unknown type means this server is older than the log: going on
		// would diverge from the other servers.
		panic(fmt.Sprintf("fsm: unknown command type %d at index %d", t, l.Index))
	}
	if err := proto.Unmarshal(data[1:], msg); err != nil {
		panic(fmt.Sprintf("fsm: decoding command %d at index %d: %v", t, l.Index, err))
	}
	txn := f.State().Write(l.Index)
	defer txn.Abort()
	if err := apply(txn, msg); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func (f *FSM) applyInit(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.InitCommand)
	if txn.Config() != nil {
		return nil // bootstrapped already: a restart's init is a no-op
	}
	txn.SetConfig(cmd.Config)
	txn.UpsertServer(cmd.Server)
	for _, c := range cmd.Issued {
		txn.UpsertIssued(c)
	}
	return nil
}

func (f *FSM) applyUpsertServer(txn *state.Txn, m proto.Message) error {
	txn.UpsertServer(m.(*pb.UpsertServerCommand).Server)
	return nil
}

// applyRemoveServer forgets a server and revokes its certificates.
func (f *FSM) applyRemoveServer(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.RemoveServerCommand)
	txn.DeleteServer(cmd.Id)
	if cmd.Time != nil {
		revokeIn(txn, revokeCmd(vocab.RoleServer, cmd.Id, "", "removed from the coordinator", cmd.Time.AsTime()))
	}
	return nil
}

func (f *FSM) applyResources(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.ApplyResourcesCommand)
	for _, p := range cmd.Pki {
		txn.InsertPKI(p)
	}
	for _, c := range cmd.Clusters {
		txn.UpsertCluster(c)
	}
	for _, h := range cmd.Hypervisors {
		// Operators own labels and scheduling; health and reports that
		// were committed meanwhile stay.
		cur := txn.Hypervisor(h.Metadata.Name)
		if cur == nil {
			return fmt.Errorf("hypervisor %q: %w", h.Metadata.Name, state.ErrNotFound)
		}
		cur = proto.Clone(cur).(*pb.Hypervisor)
		if cur.Status == nil {
			cur.Status = &pb.HypervisorStatus{}
		}
		cur.Metadata.Labels = h.Metadata.Labels
		cur.Spec.Unschedulable = h.Spec.Unschedulable
		cur.Status.Draining = h.GetStatus().GetDraining() && h.Spec.Unschedulable
		txn.UpsertHypervisor(cur)
	}
	txn.InsertEvents(cmd.Events)
	return nil
}

func (f *FSM) applyDeleteCluster(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.DeleteClusterCommand)
	c := txn.Cluster(cmd.Name)
	if c == nil {
		return fmt.Errorf("cluster %q: %w", cmd.Name, state.ErrNotFound)
	}
	f.markClusterDeleting(txn, c, cmd)
	f.finishClusterDeletion(txn, cmd.Name)
	return nil
}

// markClusterDeleting marks the cluster and each of its components for
// removal; agents tear the components down and report them removed.
func (f *FSM) markClusterDeleting(txn *state.Txn, c *pb.Cluster, cmd *pb.DeleteClusterCommand) {
	c = proto.Clone(c).(*pb.Cluster)
	if c.Metadata.DeletionTimestamp == nil {
		c.Metadata.DeletionTimestamp = cmd.Time
	}
	if c.Status == nil {
		c.Status = &pb.ClusterStatus{}
	}
	c.Status.Phase = resources.PhaseDeleting
	txn.UpsertCluster(c)
	for _, comp := range txn.ComponentsOfCluster(cmd.Name) {
		if comp.Metadata.DeletionTimestamp == nil {
			comp = proto.Clone(comp).(*pb.Component)
			comp.Metadata.DeletionTimestamp = cmd.Time
			txn.UpsertComponent(comp)
		}
	}
	txn.InsertEvents([]*pb.Event{state.Event(cmd.Name, "Normal", "Deleting", "cluster deletion requested", cmd.Time.AsTime())})
}

// finishClusterDeletion removes a deleting cluster once none of its
// components remain.
func (f *FSM) finishClusterDeletion(txn *state.Txn, name string) {
	c := txn.Cluster(name)
	if c == nil || c.Metadata.DeletionTimestamp == nil || len(txn.ComponentsOfCluster(name)) > 0 {
		return
	}
	txn.DeleteCluster(name)
}

// applyDeleteHypervisor removes an empty hypervisor and revokes its
// agent's and join endpoint's certificates.
func (f *FSM) applyDeleteHypervisor(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.DeleteHypervisorCommand)
	name := cmd.Name
	if txn.Hypervisor(name) == nil {
		return fmt.Errorf("hypervisor %q: %w", name, state.ErrNotFound)
	}
	if n := len(txn.ComponentsOnHypervisor(name)); n > 0 {
		return fmt.Errorf("hypervisor %q has %d components: %w", name, n, ErrHypervisorInUse)
	}
	txn.DeleteHypervisor(name)
	if cmd.Time != nil {
		for _, role := range []string{vocab.RoleHypervisor, vocab.RoleJoinEndpoint} {
			revokeIn(txn, revokeCmd(role, name, "", "hypervisor deleted", cmd.Time.AsTime()))
		}
	}
	return nil
}

func (f *FSM) applyUpsertToken(txn *state.Txn, m proto.Message) error {
	txn.UpsertToken(m.(*pb.UpsertTokenCommand).Token)
	return nil
}

func (f *FSM) applyRevokeToken(txn *state.Txn, m proto.Message) error {
	id := m.(*pb.RevokeTokenCommand).Id
	tok := txn.Token(id)
	if tok == nil {
		return fmt.Errorf("token %q: %w", id, state.ErrNotFound)
	}
	tok = proto.Clone(tok).(*pb.Token)
	tok.Revoked = true
	txn.UpsertToken(tok)
	return nil
}

// applyRegisterHypervisor records a hypervisor and its agent's certificate
// and uses the token once. A taken name is refused unless the entry
// replaces it (a token bound to the name): then the name's old
// certificates are revoked, and its labels, scheduling and status stay.
func (f *FSM) applyRegisterHypervisor(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.RegisterHypervisorCommand)
	h := cmd.Hypervisor
	old := txn.Hypervisor(h.Metadata.Name)
	if old != nil && !cmd.Replace {
		return fmt.Errorf("hypervisor %q is registered already; to register a machine that lost its identity under this name, use a token made with --name %s: %w",
			h.Metadata.Name, h.Metadata.Name, errAlreadyExists)
	}
	if err := useToken(txn, cmd.TokenId, cmd.Time); err != nil {
		return err
	}
	if old != nil {
		// Operators own labels and scheduling; the agent owns the spec.
		h.Metadata.Labels = old.Metadata.Labels
		h.Metadata.Uid = old.Metadata.Uid
		h.Metadata.CreationTimestamp = old.Metadata.CreationTimestamp
		h.Spec.Unschedulable = old.Spec.Unschedulable
		h.Status = old.Status
		for _, role := range []string{vocab.RoleHypervisor, vocab.RoleJoinEndpoint} {
			revokeIn(txn, revokeCmd(role, h.Metadata.Name, "", "the hypervisor registered again", cmd.Time.AsTime()))
		}
	}
	txn.UpsertHypervisor(h)
	if cmd.Cert != nil {
		txn.UpsertIssued(cmd.Cert)
	}
	return nil
}

// useToken spends one use of a token: the handler checked it against the
// state it read, but two requests may race for its last use, so this
// check is the one that counts. now is the entry's time (nil: not known).
func useToken(txn *state.Txn, id string, now *timestamppb.Timestamp) error {
	if id == "" {
		return nil
	}
	tok := txn.Token(id)
	switch {
	case tok == nil:
		return fmt.Errorf("token %s: unknown (pruned): %w", id, errDenied)
	case tok.Revoked:
		return fmt.Errorf("token %s: revoked: %w", id, errDenied)
	case tok.MaxUses > 0 && tok.Uses >= tok.MaxUses:
		return fmt.Errorf("token %s: used up (%d of %d uses): %w", id, tok.Uses, tok.MaxUses, errDenied)
	case now != nil && !now.AsTime().Before(tok.Expires.AsTime()):
		return fmt.Errorf("token %s: expired at %s: %w", id, tok.Expires.AsTime().UTC().Format(time.RFC3339), errDenied)
	}
	tok = proto.Clone(tok).(*pb.Token)
	tok.Uses++
	txn.UpsertToken(tok)
	return nil
}

// applyIssueCerts records issued certificates, using a token once.
func (f *FSM) applyIssueCerts(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.IssueCertsCommand)
	var at *timestamppb.Timestamp
	if len(cmd.Certs) > 0 {
		at = cmd.Certs[0].NotBefore
	}
	if err := useToken(txn, cmd.TokenId, at); err != nil {
		return err
	}
	for _, c := range cmd.Certs {
		txn.UpsertIssued(c)
	}
	return nil
}

// applyRevokeCerts revokes certificates by serial or holder.
func (f *FSM) applyRevokeCerts(txn *state.Txn, m proto.Message) error {
	revokeIn(txn, m.(*pb.RevokeCertsCommand))
	return nil
}

// applyPrune forgets tokens and certificates expired: a revoked
// certificate stays listed until it expires.
func (f *FSM) applyPrune(txn *state.Txn, m proto.Message) error {
	now := m.(*pb.PruneCommand).Time.AsTime()
	for _, tok := range txn.Tokens() {
		if tokenExpired(tok, now) {
			txn.DeleteToken(tok)
		}
	}
	for _, c := range txn.AllIssued() {
		if !now.Before(c.NotAfter.AsTime()) {
			txn.DeleteIssued(c)
		}
	}
	return nil
}

// applyDeleteComponent marks an orphaned component for removal: the
// others belong to their clusters.
func (f *FSM) applyDeleteComponent(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.DeleteComponentCommand)
	comp := txn.Component(cmd.Name)
	switch {
	case comp == nil:
		return fmt.Errorf("component %q: %w", cmd.Name, state.ErrNotFound)
	case !comp.Spec.Orphaned:
		return fmt.Errorf("component %q belongs to cluster %s: delete the cluster, or change its replicas: %w", cmd.Name, comp.Spec.Cluster, errInvalid)
	case txn.Hypervisor(comp.Spec.Hypervisor).GetStatus().GetHealth() == resources.HealthDead:
		// Its agent cannot remove it: forgotten, with whatever its
		// hypervisor holds if it comes back (the agent removes the files
		// of components not assigned to it).
		txn.DeleteComponent(cmd.Name)
		return nil
	case comp.Metadata.DeletionTimestamp != nil:
		return nil
	}
	comp = proto.Clone(comp).(*pb.Component)
	comp.Metadata.DeletionTimestamp = cmd.Time
	txn.UpsertComponent(comp)
	return nil
}

func (f *FSM) applyPlace(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.PlaceCommand)
	c := txn.Cluster(cmd.Cluster)
	if c == nil {
		return fmt.Errorf("cluster %q: %w", cmd.Cluster, state.ErrNotFound)
	}
	for _, comp := range cmd.Components {
		if txn.Component(comp.Metadata.Name) != nil {
			return fmt.Errorf("component %q exists: %w", comp.Metadata.Name, state.ErrConflict)
		}
		used := map[uint32]bool{}
		for _, other := range txn.ComponentsOnHypervisor(comp.Spec.Hypervisor) {
			for _, p := range other.Spec.Ports {
				used[p] = true
			}
		}
		for name, p := range comp.Spec.Ports {
			if used[p] {
				return fmt.Errorf("port %d (%s) on %s: %w", p, name, comp.Spec.Hypervisor, ErrPortTaken)
			}
			used[p] = true
		}
		txn.UpsertComponent(comp)
	}
	for _, certs := range cmd.Certs {
		keepSpareKeys(txn.ComponentCerts(certs.Component), certs)
		txn.UpsertComponentCerts(certs)
	}
	for _, name := range cmd.Remove {
		if comp := txn.Component(name); comp != nil && comp.Metadata.DeletionTimestamp == nil {
			comp = proto.Clone(comp).(*pb.Component)
			comp.Metadata.DeletionTimestamp = cmd.Time
			txn.UpsertComponent(comp)
		}
	}
	// A component on a dead hypervisor cannot report itself removed: the
	// leader forgets it, which frees its ports. Checked here again, so an
	// entry decided before its hypervisor came back forgets nothing.
	for _, name := range cmd.Forget {
		comp := txn.Component(name)
		if comp == nil || comp.Spec.Cluster != cmd.Cluster || comp.Metadata.DeletionTimestamp == nil ||
			txn.Hypervisor(comp.Spec.Hypervisor).GetStatus().GetHealth() != resources.HealthDead {
			continue
		}
		txn.DeleteComponent(name)
	}
	c = proto.Clone(c).(*pb.Cluster)
	if cmd.Status != nil {
		c.Status = cmd.Status
	}
	if cmd.VpnCidr != "" {
		c.Spec.Vpn.Cidr = cmd.VpnCidr
	}
	txn.UpsertCluster(c)
	txn.InsertEvents(cmd.Events)
	if len(cmd.Forget) > 0 {
		f.finishClusterDeletion(txn, cmd.Cluster)
	}
	return nil
}

func (f *FSM) applyReportStatus(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.ReportStatusCommand)
	h := txn.Hypervisor(cmd.Hypervisor)
	if h == nil {
		return fmt.Errorf("hypervisor %q: %w", cmd.Hypervisor, state.ErrNotFound)
	}
	// A heartbeat changes the hypervisor's last_seen only, and a status
	// reported again unchanged nothing: neither wakes a watch.
	txn.SetLastSeen(cmd.Hypervisor, cmd.Time)
	if h.GetStatus().GetTrustGeneration() != cmd.TrustGeneration {
		h = proto.Clone(h).(*pb.Hypervisor)
		if h.Status == nil {
			h.Status = &pb.HypervisorStatus{}
		}
		h.Status.TrustGeneration, h.Status.LastSeen = cmd.TrustGeneration, cmd.Time
		txn.UpsertHypervisor(h)
	}
	for _, report := range cmd.Components {
		comp := txn.Component(report.Metadata.GetName())
		if comp == nil || comp.Spec.Hypervisor != cmd.Hypervisor || proto.Equal(comp.Status, report.Status) {
			continue // a stale report (the component moved or went), or nothing new
		}
		comp = proto.Clone(comp).(*pb.Component)
		comp.Status = report.Status
		txn.UpsertComponent(comp)
		recordBackups(txn, comp, report.Status.GetBackups(), cmd.Time)
	}
	for _, name := range cmd.Removed {
		comp := txn.Component(name)
		if comp == nil || comp.Spec.Hypervisor != cmd.Hypervisor || comp.Metadata.DeletionTimestamp == nil {
			continue
		}
		txn.DeleteComponent(name)
		f.finishClusterDeletion(txn, comp.Spec.Cluster)
	}
	txn.InsertEvents(cmd.Events)
	return nil
}

func (f *FSM) applyClusterStatus(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.ClusterStatusCommand)
	c := txn.Cluster(cmd.Cluster)
	if c == nil {
		return fmt.Errorf("cluster %q: %w", cmd.Cluster, state.ErrNotFound)
	}
	c = proto.Clone(c).(*pb.Cluster)
	c.Status = cmd.Status
	txn.UpsertCluster(c)
	txn.InsertEvents(cmd.Events)
	return nil
}

// Snapshot implements raft.FSM.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.State().Snapshot(), keys: f.keys}, nil
}

// Restore implements raft.FSM: the snapshot becomes a new store, swapped in;
// the old one is abandoned so its watchers wake.
func (f *FSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	snap, err := DecodeSnapshot(r, f.keys)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.store
	f.store = state.Restore(snap)
	f.mu.Unlock()
	old.Abandon()
	return nil
}

type fsmSnapshot struct {
	snap *pb.Snapshot
	keys *keyring.Keyring
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := EncodeSnapshot(sink, s.snap, s.keys); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// applyJoinWorker records a node's VPN allocation, unless another join took
// its name, address or pod subnet since the handler read the state.
func (f *FSM) applyJoinWorker(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.JoinWorkerCommand)
	p := cmd.Peer
	if txn.Cluster(p.Cluster) == nil {
		return fmt.Errorf("cluster %q: %w", p.Cluster, state.ErrNotFound)
	}
	for _, o := range txn.VPNPeers(p.Cluster) {
		switch {
		case o.Name == p.Name:
			return fmt.Errorf("node %q has already joined cluster %s: %w", p.Name, p.Cluster, state.ErrConflict)
		case o.Address == p.Address, o.PodCidr == p.PodCidr:
			return fmt.Errorf("VPN address %s or pod subnet %s was taken by node %s meanwhile, join again: %w", p.Address, p.PodCidr, o.Name, state.ErrConflict)
		}
	}
	if err := useToken(txn, p.TokenId, p.Joined); err != nil {
		return err
	}
	txn.UpsertVPNPeer(p)
	if cmd.Cert != nil {
		txn.UpsertIssued(cmd.Cert)
	}
	if cmd.Event != nil {
		txn.InsertEvents([]*pb.Event{cmd.Event})
	}
	return nil
}

// applyRemovePeer forgets a node: its peer, addresses and bootstrap token.
func (f *FSM) applyRemovePeer(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.RemovePeerCommand)
	if txn.VPNPeer(cmd.Cluster, cmd.Name) == nil {
		return fmt.Errorf("node %q of cluster %q: %w", cmd.Name, cmd.Cluster, state.ErrNotFound)
	}
	txn.DeleteVPNPeer(cmd.Cluster, cmd.Name)
	if cmd.Time != nil {
		revokeIn(txn, revokeCmd(vocab.RoleWorker, cmd.Name, cmd.Cluster, "node removed from the cluster", cmd.Time.AsTime()))
	}
	if cmd.Event != nil {
		txn.InsertEvents([]*pb.Event{cmd.Event})
	}
	return nil
}

// applySetHealth records the leader's health decision on a hypervisor:
// its health, its Healthy condition and the events of the clusters it
// runs components of. A report committed since the decision was made
// (another lastSeen) makes it stale: refused, the leader decides again.
func (f *FSM) applySetHealth(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.SetHealthCommand)
	h := txn.Hypervisor(cmd.Hypervisor)
	if h == nil {
		return fmt.Errorf("hypervisor %q: %w", cmd.Hypervisor, state.ErrNotFound)
	}
	if !proto.Equal(h.GetStatus().GetLastSeen(), cmd.LastSeen) {
		return fmt.Errorf("hypervisor %q: %w", cmd.Hypervisor, ErrStaleHealth)
	}
	h = proto.Clone(h).(*pb.Hypervisor)
	if h.Status == nil {
		h.Status = &pb.HypervisorStatus{}
	}
	h.Status.Health = cmd.Health
	if cmd.Condition != nil {
		h.Status.Conditions = resources.SetCondition(h.Status.Conditions, cmd.Condition)
	}
	txn.UpsertHypervisor(h)
	txn.InsertEvents(cmd.Events)
	return nil
}

// applySetGossipKey gives the coordinator its gossip key, once.
func (f *FSM) applySetGossipKey(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.SetGossipKeyCommand)
	cfg := txn.Config()
	if cfg == nil || len(cfg.GossipKey) > 0 {
		return nil
	}
	cfg = proto.Clone(cfg).(*pb.CoordinatorConfig)
	cfg.GossipKey = cmd.Key
	txn.SetConfig(cfg)
	return nil
}
