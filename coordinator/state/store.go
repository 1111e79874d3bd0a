package state

import (
	"errors"
	"fmt"
	"sort"

	memdb "github.com/hashicorp/go-memdb"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxEventsPerCluster bounds the events kept for each cluster; older ones
// are dropped as new ones arrive.
const MaxEventsPerCluster = 100

// Sentinel errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// Store is the indexed, watchable state of the coordinator.
type Store struct {
	db        *memdb.MemDB
	abandonCh chan struct{}
}

// New returns an empty store.
func New() *Store {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		panic(fmt.Sprintf("state schema: %v", err)) // a programming error
	}
	return &Store{db: db, abandonCh: make(chan struct{})}
}

// View is a read-only view of the store as it is now: all its reads see
// one state, where reads of the store itself each see the latest. Its
// watch channels fire on later changes as the store's do.
func (s *Store) View() *Store { return &Store{db: s.db.Snapshot(), abandonCh: s.abandonCh} }

// AbandonCh is closed when this store is replaced by a restored one.
func (s *Store) AbandonCh() <-chan struct{} { return s.abandonCh }

// Abandon marks the store as replaced, waking everyone blocked on it.
func (s *Store) Abandon() { close(s.abandonCh) }

func clone[T proto.Message](m T) T { return proto.Clone(m).(T) }

// first returns a copy of the object of table with the given id, or nil.
func first[T proto.Message](s *Store, ws memdb.WatchSet, table, index string, arg any) T {
	var zero T
	txn := s.db.Txn(false)
	ch, obj, err := txn.FirstWatch(table, index, arg)
	if err != nil {
		panic(fmt.Sprintf("state: reading %s: %v", table, err))
	}
	ws.Add(ch)
	if obj == nil {
		return zero
	}
	return clone(obj.(T))
}

// list returns copies of every object of table matching index and args.
func list[T proto.Message](s *Store, ws memdb.WatchSet, table, index string, args ...any) []T {
	txn := s.db.Txn(false)
	it, err := txn.Get(table, index, args...)
	if err != nil {
		panic(fmt.Sprintf("state: listing %s: %v", table, err))
	}
	ws.Add(it.WatchCh())
	var out []T
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, clone(obj.(T)))
	}
	return out
}

// Watch adds to ws what fires when any object of table changes, reading
// none of them.
func (s *Store) Watch(ws memdb.WatchSet, table string) {
	it, err := s.db.Txn(false).Get(table, "id")
	if err != nil {
		panic(fmt.Sprintf("state: watching %s: %v", table, err))
	}
	ws.Add(it.WatchCh())
}

// VPNPeer returns a copy of a cluster's VPN peer, or nil.
func (s *Store) VPNPeer(ws memdb.WatchSet, cluster, name string) *pb.VPNPeer {
	return first[*pb.VPNPeer](s, ws, TableVPNPeers, "id", PeerKey(cluster, name))
}

// VPNPeers returns copies of a cluster's VPN peers, by name.
func (s *Store) VPNPeers(ws memdb.WatchSet, cluster string) []*pb.VPNPeer {
	return list[*pb.VPNPeer](s, ws, TableVPNPeers, "cluster", cluster)
}

// Config returns the coordinator configuration, or nil before bootstrap.
func (s *Store) Config(ws memdb.WatchSet) *pb.CoordinatorConfig {
	return first[*pb.CoordinatorConfig](s, ws, TableConfig, "id", "config")
}

// Servers lists the coordinator servers.
func (s *Store) Servers(ws memdb.WatchSet) []*pb.Server {
	return list[*pb.Server](s, ws, TableServers, "id")
}

// Cluster returns the named cluster, or nil.
func (s *Store) Cluster(ws memdb.WatchSet, name string) *pb.Cluster {
	return first[*pb.Cluster](s, ws, TableClusters, "id", name)
}

// Clusters lists every cluster by name.
func (s *Store) Clusters(ws memdb.WatchSet) []*pb.Cluster {
	return list[*pb.Cluster](s, ws, TableClusters, "id")
}

// ClusterPKI returns the secret material of a cluster, or nil.
func (s *Store) ClusterPKI(ws memdb.WatchSet, cluster string) *pb.ClusterPKI {
	return first[*pb.ClusterPKI](s, ws, TablePKI, "id", cluster)
}

// Hypervisor returns the named hypervisor, or nil. Its status lists the
// components placed on it and their ports.
func (s *Store) Hypervisor(ws memdb.WatchSet, name string) *pb.Hypervisor {
	h := first[*pb.Hypervisor](s, ws, TableHypervisors, "id", name)
	if h != nil {
		s.fillHypervisorStatus(h, s.ComponentsOnHypervisor(ws, name), s.lastSeen())
	}
	return h
}

// HypervisorRow returns the named hypervisor as stored, or nil: its spec
// and health, none of the status derived from other tables (components,
// ports, last report), so that ws watches its row alone.
func (s *Store) HypervisorRow(ws memdb.WatchSet, name string) *pb.Hypervisor {
	return first[*pb.Hypervisor](s, ws, TableHypervisors, "id", name)
}

// Hypervisors lists every hypervisor by name, with derived status. It reads
// the components table once for all of them.
func (s *Store) Hypervisors(ws memdb.WatchSet) []*pb.Hypervisor {
	hs := list[*pb.Hypervisor](s, ws, TableHypervisors, "id")
	it, err := s.db.Txn(false).Get(TableComponents, "id")
	if err != nil {
		panic(fmt.Sprintf("state: listing %s: %v", TableComponents, err))
	}
	ws.Add(it.WatchCh())
	placed := map[string][]*pb.Component{} // not copies: only read here
	for o := it.Next(); o != nil; o = it.Next() {
		c := o.(*pb.Component)
		placed[c.GetSpec().GetHypervisor()] = append(placed[c.GetSpec().GetHypervisor()], c)
	}
	seen := s.lastSeen()
	for _, h := range hs {
		s.fillHypervisorStatus(h, placed[h.GetMetadata().GetName()], seen)
	}
	return hs
}

// lastSeen looks up hypervisors' last report times, watching none: a
// heartbeat wakes no one.
func (s *Store) lastSeen() func(name string) *timestamppb.Timestamp {
	txn := s.db.Txn(false)
	return func(name string) *timestamppb.Timestamp {
		o, err := txn.First(TableLastSeen, "id", name)
		if err != nil || o == nil {
			return nil
		}
		return clone(o.(*lastSeen).Time)
	}
}

// fillHypervisorStatus gives a hypervisor the component list and allocated
// ports of the components placed on it, and its last report time.
func (s *Store) fillHypervisorStatus(h *pb.Hypervisor, placed []*pb.Component, lastSeen func(string) *timestamppb.Timestamp) {
	if h.Status == nil {
		h.Status = &pb.HypervisorStatus{}
	}
	h.Status.LastSeen = lastSeen(h.GetMetadata().GetName())
	h.Status.Components, h.Status.AllocatedPorts = nil, nil
	for _, c := range placed {
		h.Status.Components = append(h.Status.Components, c.GetMetadata().GetName())
		for _, p := range c.GetSpec().GetPorts() {
			h.Status.AllocatedPorts = append(h.Status.AllocatedPorts, p)
		}
	}
	sort.Slice(h.Status.AllocatedPorts, func(i, j int) bool { return h.Status.AllocatedPorts[i] < h.Status.AllocatedPorts[j] })
}

// Component returns the named component, or nil.
func (s *Store) Component(ws memdb.WatchSet, name string) *pb.Component {
	return first[*pb.Component](s, ws, TableComponents, "id", name)
}

// Components lists every component by name.
func (s *Store) Components(ws memdb.WatchSet) []*pb.Component {
	return list[*pb.Component](s, ws, TableComponents, "id")
}

// ComponentsOfCluster lists the components of one cluster.
func (s *Store) ComponentsOfCluster(ws memdb.WatchSet, cluster string) []*pb.Component {
	return list[*pb.Component](s, ws, TableComponents, "cluster", cluster)
}

// ComponentsOnHypervisor lists the components placed on one hypervisor.
func (s *Store) ComponentsOnHypervisor(ws memdb.WatchSet, hypervisor string) []*pb.Component {
	return list[*pb.Component](s, ws, TableComponents, "hypervisor", hypervisor)
}

// ComponentCerts returns the leaf certificates of a component, or nil.
func (s *Store) ComponentCerts(ws memdb.WatchSet, component string) *pb.ComponentCerts {
	return first[*pb.ComponentCerts](s, ws, TableComponentCerts, "id", component)
}

// Issued returns the issued certificate with the given serial, or nil.
func (s *Store) Issued(ws memdb.WatchSet, serial string) *pb.IssuedCert {
	return first[*pb.IssuedCert](s, ws, TableIssued, "id", serial)
}

// IssuedTo lists the certificates issued to a holder (role and name).
func (s *Store) IssuedTo(ws memdb.WatchSet, role, name string) []*pb.IssuedCert {
	return list[*pb.IssuedCert](s, ws, TableIssued, "holder", HolderKey(role, name))
}

// AllIssued lists every issued certificate by serial.
func (s *Store) AllIssued(ws memdb.WatchSet) []*pb.IssuedCert {
	return list[*pb.IssuedCert](s, ws, TableIssued, "id")
}

// Token returns the token with the given ID, or nil.
func (s *Store) Token(ws memdb.WatchSet, id string) *pb.Token {
	return first[*pb.Token](s, ws, TableTokens, "id", id)
}

// Tokens lists every token by ID.
func (s *Store) Tokens(ws memdb.WatchSet) []*pb.Token {
	return list[*pb.Token](s, ws, TableTokens, "id")
}

// Events lists a cluster's recent events, oldest first.
func (s *Store) Events(ws memdb.WatchSet, cluster string) []*pb.Event {
	txn := s.db.Txn(false)
	it, err := txn.Get(TableEvents, "cluster", cluster)
	if err != nil {
		panic(fmt.Sprintf("state: listing events: %v", err))
	}
	ws.Add(it.WatchCh())
	var out []*pb.Event
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, clone(obj.(*storedEvent).Event))
	}
	return out
}

// Index returns the highest Raft index that changed any of the tables; with
// no tables, of any table.
func (s *Store) Index(tables ...string) uint64 {
	txn := s.db.Txn(false)
	var max uint64
	it, err := txn.Get(TableIndex, "id")
	if err != nil {
		panic(fmt.Sprintf("state: reading indexes: %v", err))
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		e := obj.(*indexEntry)
		if (len(tables) == 0 || contains(tables, e.Table)) && e.Index > max {
			max = e.Index
		}
	}
	return max
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Backups returns copies of a cluster's backups, by ID.
func (s *Store) Backups(ws memdb.WatchSet, cluster string) []*pb.Backup {
	return list[*pb.Backup](s, ws, TableBackups, "cluster", cluster)
}
