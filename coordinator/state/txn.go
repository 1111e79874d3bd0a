package state

import (
	"fmt"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Txn is a write transaction at one Raft index. Only the FSM makes them.
// Objects passed in are stored as they are: the caller hands them over.
type Txn struct {
	txn   *memdb.Txn
	index uint64
}

// Write starts a write transaction for the entry at index.
func (s *Store) Write(index uint64) *Txn {
	return &Txn{txn: s.db.Txn(true), index: index}
}

// Commit makes the transaction's writes visible and wakes watchers.
func (t *Txn) Commit() { t.txn.Commit() }

// Abort drops the transaction's writes; after Commit it does nothing.
func (t *Txn) Abort() { t.txn.Abort() }

func (t *Txn) insert(table string, obj any) {
	if err := t.txn.Insert(table, obj); err != nil {
		panic(fmt.Sprintf("state: writing %s: %v", table, err))
	}
	t.touch(table)
}

func (t *Txn) delete(table string, obj any) {
	if err := t.txn.Delete(table, obj); err != nil {
		panic(fmt.Sprintf("state: deleting from %s: %v", table, err))
	}
	t.touch(table)
}

func (t *Txn) touch(table string) {
	if err := t.txn.Insert(TableIndex, &indexEntry{Table: table, Index: t.index}); err != nil {
		panic(fmt.Sprintf("state: writing index: %v", err))
	}
}

func (t *Txn) get(table string, id string) any {
	obj, err := t.txn.First(table, "id", id)
	if err != nil {
		panic(fmt.Sprintf("state: reading %s: %v", table, err))
	}
	return obj
}

// stamp sets the create and modify indexes of an object's metadata.
func (t *Txn) stamp(meta *pb.ObjectMeta, existing *pb.ObjectMeta) {
	meta.CreateIndex = t.index
	if existing != nil {
		meta.CreateIndex = existing.GetCreateIndex()
		meta.CreationTimestamp = existing.GetCreationTimestamp()
		meta.Uid = existing.GetUid()
	}
	meta.ModifyIndex = t.index
}

// SetConfig stores the coordinator configuration.
func (t *Txn) SetConfig(c *pb.CoordinatorConfig) { t.insert(TableConfig, c) }

// Config returns the configuration as this transaction sees it.
func (t *Txn) Config() *pb.CoordinatorConfig {
	if o := t.get(TableConfig, "config"); o != nil {
		return o.(*pb.CoordinatorConfig)
	}
	return nil
}

// UpsertServer stores a coordinator server.
func (t *Txn) UpsertServer(s *pb.Server) { t.insert(TableServers, s) }

// DeleteServer removes a coordinator server; a missing one is no error.
func (t *Txn) DeleteServer(id string) {
	if o := t.get(TableServers, id); o != nil {
		t.delete(TableServers, o)
	}
}

// Cluster returns the named cluster as this transaction sees it (not a
// copy: callers must not modify it), or nil.
func (t *Txn) Cluster(name string) *pb.Cluster {
	if o := t.get(TableClusters, name); o != nil {
		return o.(*pb.Cluster)
	}
	return nil
}

// UpsertCluster stores a cluster, keeping its identity and creation index.
func (t *Txn) UpsertCluster(c *pb.Cluster) {
	t.stamp(c.Metadata, t.Cluster(c.GetMetadata().GetName()).GetMetadata())
	t.insert(TableClusters, c)
}

// DeleteCluster removes a cluster with its PKI, VPN peers, events and
// backup records (not the backups in the target).
func (t *Txn) DeleteCluster(name string) {
	if c := t.Cluster(name); c != nil {
		t.delete(TableClusters, c)
	}
	for _, b := range t.Backups(name) {
		t.delete(TableBackups, b)
	}
	for _, p := range t.VPNPeers(name) {
		t.delete(TableVPNPeers, p)
	}
	if p := t.get(TablePKI, name); p != nil {
		t.delete(TablePKI, p)
	}
	if _, err := t.txn.DeleteAll(TableEvents, "cluster", name); err != nil {
		panic(fmt.Sprintf("state: deleting events: %v", err))
	}
	t.touch(TableEvents)
}

// SetBackupKey gives a cluster made before backups its backup key, once.
func (t *Txn) SetBackupKey(cluster string, key []byte) {
	if o := t.get(TablePKI, cluster); o != nil && len(o.(*pb.ClusterPKI).BackupKey) == 0 {
		p := clone(o.(*pb.ClusterPKI))
		p.BackupKey = key
		t.insert(TablePKI, p)
	}
}

// InsertPKI stores a cluster's PKI unless it already has one: a cluster's
// authorities are made once.
func (t *Txn) InsertPKI(p *pb.ClusterPKI) {
	if t.get(TablePKI, p.GetCluster()) == nil {
		t.insert(TablePKI, p)
	}
}

// ClusterPKI returns a cluster's PKI (not a copy), or nil.
func (t *Txn) ClusterPKI(cluster string) *pb.ClusterPKI {
	if o := t.get(TablePKI, cluster); o != nil {
		return o.(*pb.ClusterPKI)
	}
	return nil
}

// ReplacePKI stores a cluster's PKI in place of the one it has (a CA
// rotation's stage).
func (t *Txn) ReplacePKI(p *pb.ClusterPKI) { t.insert(TablePKI, p) }

// Hypervisor returns the named hypervisor, or nil: a copy when it has a
// last report time (kept apart, put back here), else the stored object.
// Either way, not to be modified.
func (t *Txn) Hypervisor(name string) *pb.Hypervisor {
	o := t.get(TableHypervisors, name)
	if o == nil {
		return nil
	}
	h := o.(*pb.Hypervisor)
	if seen := t.lastSeen(name); seen != nil {
		h = withLastSeen(h, seen)
	}
	return h
}

func (t *Txn) lastSeen(name string) *timestamppb.Timestamp {
	if o := t.get(TableLastSeen, name); o != nil {
		return o.(*lastSeen).Time
	}
	return nil
}

// UpsertHypervisor stores a hypervisor. Its derived status fields are not
// stored; its last_seen, when set, is stored apart (SetLastSeen).
func (t *Txn) UpsertHypervisor(h *pb.Hypervisor) {
	t.stamp(h.Metadata, t.Hypervisor(h.GetMetadata().GetName()).GetMetadata())
	if h.Status != nil {
		h.Status.Components, h.Status.AllocatedPorts = nil, nil
		if h.Status.LastSeen != nil {
			t.SetLastSeen(h.Metadata.GetName(), h.Status.LastSeen)
			h.Status.LastSeen = nil
		}
	}
	t.insert(TableHypervisors, h)
}

// SetLastSeen records when a hypervisor last reported, without changing
// its row.
func (t *Txn) SetLastSeen(name string, at *timestamppb.Timestamp) {
	if !proto.Equal(t.lastSeen(name), at) {
		t.insert(TableLastSeen, &lastSeen{Hypervisor: name, Time: clone(at)})
	}
}

// DeleteHypervisor removes a hypervisor.
func (t *Txn) DeleteHypervisor(name string) {
	if o := t.get(TableHypervisors, name); o != nil {
		t.delete(TableHypervisors, o)
	}
	if o := t.get(TableLastSeen, name); o != nil {
		t.delete(TableLastSeen, o)
	}
}

// Component returns the named component (not a copy), or nil.
func (t *Txn) Component(name string) *pb.Component {
	if o := t.get(TableComponents, name); o != nil {
		return o.(*pb.Component)
	}
	return nil
}

// ComponentsOfCluster lists a cluster's components (not copies).
func (t *Txn) ComponentsOfCluster(cluster string) []*pb.Component {
	return t.components("cluster", cluster)
}

// ComponentsOnHypervisor lists a hypervisor's components (not copies).
func (t *Txn) ComponentsOnHypervisor(hypervisor string) []*pb.Component {
	return t.components("hypervisor", hypervisor)
}

func (t *Txn) components(index, arg string) []*pb.Component {
	it, err := t.txn.Get(TableComponents, index, arg)
	if err != nil {
		panic(fmt.Sprintf("state: listing components: %v", err))
	}
	var out []*pb.Component
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*pb.Component))
	}
	return out
}

// UpsertComponent stores a component.
func (t *Txn) UpsertComponent(c *pb.Component) {
	t.stamp(c.Metadata, t.Component(c.GetMetadata().GetName()).GetMetadata())
	t.insert(TableComponents, c)
}

// DeleteComponent removes a component and its certificates.
func (t *Txn) DeleteComponent(name string) {
	if c := t.Component(name); c != nil {
		t.delete(TableComponents, c)
	}
	if cc := t.get(TableComponentCerts, name); cc != nil {
		t.delete(TableComponentCerts, cc)
	}
}

// ComponentCerts returns a component's certificates (not a copy), or nil.
func (t *Txn) ComponentCerts(name string) *pb.ComponentCerts {
	cc, _ := t.get(TableComponentCerts, name).(*pb.ComponentCerts)
	return cc
}

// UpsertComponentCerts stores a component's leaf certificates.
func (t *Txn) UpsertComponentCerts(c *pb.ComponentCerts) { t.insert(TableComponentCerts, c) }

// Issued returns an issued certificate (not a copy), or nil.
func (t *Txn) Issued(serial string) *pb.IssuedCert {
	if o := t.get(TableIssued, serial); o != nil {
		return o.(*pb.IssuedCert)
	}
	return nil
}

// IssuedTo lists the certificates of a holder as this transaction sees
// them (not copies).
func (t *Txn) IssuedTo(role, name string) []*pb.IssuedCert {
	return all[*pb.IssuedCert](t, TableIssued, "holder", HolderKey(role, name))
}

// AllIssued lists every issued certificate (not copies).
func (t *Txn) AllIssued() []*pb.IssuedCert { return all[*pb.IssuedCert](t, TableIssued, "id") }

// UpsertIssued stores an issued certificate.
func (t *Txn) UpsertIssued(c *pb.IssuedCert) { t.insert(TableIssued, c) }

// DeleteIssued forgets an issued certificate.
func (t *Txn) DeleteIssued(c *pb.IssuedCert) { t.delete(TableIssued, c) }

// all lists the objects of a table by an index as t sees them (not
// copies).
func all[T any](t *Txn, table, index string, args ...any) []T {
	it, err := t.txn.Get(table, index, args...)
	if err != nil {
		panic(fmt.Sprintf("state: listing %s: %v", table, err))
	}
	var out []T
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, o.(T))
	}
	return out
}

// Token returns a token (not a copy), or nil.
func (t *Txn) Token(id string) *pb.Token {
	if o := t.get(TableTokens, id); o != nil {
		return o.(*pb.Token)
	}
	return nil
}

// UpsertToken stores a token.
func (t *Txn) UpsertToken(tok *pb.Token) { t.insert(TableTokens, tok) }

// Tokens lists every token (not copies).
func (t *Txn) Tokens() []*pb.Token { return all[*pb.Token](t, TableTokens, "id") }

// DeleteToken forgets a token.
func (t *Txn) DeleteToken(tok *pb.Token) { t.delete(TableTokens, tok) }

// InsertEvents appends events to their clusters, numbering them with this
// transaction's index, and drops the oldest past MaxEventsPerCluster.
func (t *Txn) InsertEvents(events []*pb.Event) {
	touched := map[string]bool{}
	for i, e := range events {
		e.Index = t.index
		t.insert(TableEvents, &storedEvent{Key: eventKey(e.GetCluster(), t.index, i), Event: e})
		touched[e.GetCluster()] = true
	}
	for cluster := range touched {
		it, err := t.txn.Get(TableEvents, "cluster", cluster)
		if err != nil {
			panic(fmt.Sprintf("state: listing events: %v", err))
		}
		var all []any
		for obj := it.Next(); obj != nil; obj = it.Next() {
			all = append(all, obj)
		}
		for _, old := range all[:max(0, len(all)-MaxEventsPerCluster)] {
			t.delete(TableEvents, old)
		}
	}
}

// Event is a shorthand to make an event for a cluster.
func Event(cluster, typ, reason, message string, now time.Time) *pb.Event {
	return &pb.Event{Cluster: cluster, Type: typ, Reason: reason, Message: message, Time: timestamppb.New(now)}
}

// VPNPeers returns a cluster's VPN peers as this transaction sees them (not
// copies).
func (t *Txn) VPNPeers(cluster string) []*pb.VPNPeer {
	return all[*pb.VPNPeer](t, TableVPNPeers, "cluster", cluster)
}

// VPNPeer returns a cluster's VPN peer (not a copy), or nil.
func (t *Txn) VPNPeer(cluster, name string) *pb.VPNPeer {
	if o := t.get(TableVPNPeers, PeerKey(cluster, name)); o != nil {
		return o.(*pb.VPNPeer)
	}
	return nil
}

// UpsertVPNPeer stores a VPN peer.
func (t *Txn) UpsertVPNPeer(p *pb.VPNPeer) { t.insert(TableVPNPeers, p) }

// DeleteVPNPeer removes a VPN peer, freeing its addresses; a missing one is
// no error.
func (t *Txn) DeleteVPNPeer(cluster, name string) {
	if p := t.VPNPeer(cluster, name); p != nil {
		t.delete(TableVPNPeers, p)
	}
}

// Backups returns a cluster's backups (not copies), by ID.
func (t *Txn) Backups(cluster string) []*pb.Backup {
	return all[*pb.Backup](t, TableBackups, "cluster", cluster)
}

// Backup returns a cluster's backup (not a copy), or nil.
func (t *Txn) Backup(cluster, id string) *pb.Backup {
	if o := t.get(TableBackups, BackupKey(cluster, id)); o != nil {
		return o.(*pb.Backup)
	}
	return nil
}

// UpsertBackup stores a backup record.
func (t *Txn) UpsertBackup(b *pb.Backup) { t.insert(TableBackups, b) }

// DeleteBackup forgets a backup record; a missing one is no error.
func (t *Txn) DeleteBackup(cluster, id string) {
	if b := t.Backup(cluster, id); b != nil {
		t.delete(TableBackups, b)
	}
}
