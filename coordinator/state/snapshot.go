package state

import (
	"fmt"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Snapshot returns a consistent copy of the whole store.
func (s *Store) Snapshot() *pb.Snapshot {
	txn := s.db.Txn(false)
	snap := &pb.Snapshot{TableIndexes: map[string]uint64{}}
	each := func(table string, fn func(any)) {
		it, err := txn.Get(table, "id")
		if err != nil {
			panic(fmt.Sprintf("state: snapshot of %s: %v", table, err))
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			fn(obj)
		}
	}
	each(TableConfig, func(o any) { snap.Config = clone(o.(*pb.CoordinatorConfig)) })
	each(TableServers, func(o any) { snap.Servers = append(snap.Servers, clone(o.(*pb.Server))) })
	each(TableClusters, func(o any) { snap.Clusters = append(snap.Clusters, clone(o.(*pb.Cluster))) })
	each(TablePKI, func(o any) { snap.Pki = append(snap.Pki, clone(o.(*pb.ClusterPKI))) })
	seen := map[string]*timestamppb.Timestamp{}
	each(TableLastSeen, func(o any) { seen[o.(*lastSeen).Hypervisor] = o.(*lastSeen).Time })
	each(TableHypervisors, func(o any) {
		h := o.(*pb.Hypervisor)
		snap.Hypervisors = append(snap.Hypervisors, withLastSeen(h, seen[h.GetMetadata().GetName()]))
	})
	each(TableComponents, func(o any) { snap.Components = append(snap.Components, clone(o.(*pb.Component))) })
	each(TableComponentCerts, func(o any) { snap.ComponentCerts = append(snap.ComponentCerts, clone(o.(*pb.ComponentCerts))) })
	each(TableTokens, func(o any) { snap.Tokens = append(snap.Tokens, clone(o.(*pb.Token))) })
	each(TableVPNPeers, func(o any) { snap.VpnPeers = append(snap.VpnPeers, clone(o.(*pb.VPNPeer))) })
	each(TableIssued, func(o any) { snap.Issued = append(snap.Issued, clone(o.(*pb.IssuedCert))) })
	each(TableBackups, func(o any) { snap.Backups = append(snap.Backups, clone(o.(*pb.Backup))) })
	each(TableEvents, func(o any) { snap.Events = append(snap.Events, clone(o.(*storedEvent).Event)) })
	each(TableIndex, func(o any) {
		e := o.(*indexEntry)
		snap.TableIndexes[e.Table] = e.Index
		snap.Index = max(snap.Index, e.Index)
	})
	return snap
}

// Restore builds a new store holding exactly the snapshot's state.
func Restore(snap *pb.Snapshot) *Store {
	s := New()
	txn := s.db.Txn(true)
	put := func(table string, obj any) {
		if err := txn.Insert(table, obj); err != nil {
			panic(fmt.Sprintf("state: restoring %s: %v", table, err))
		}
	}
	if snap.GetConfig() != nil {
		put(TableConfig, clone(snap.Config))
	}
	for _, o := range snap.GetServers() {
		put(TableServers, clone(o))
	}
	for _, o := range snap.GetClusters() {
		put(TableClusters, clone(o))
	}
	for _, o := range snap.GetPki() {
		put(TablePKI, clone(o))
	}
	for _, o := range snap.GetHypervisors() {
		h := clone(o)
		if at := h.GetStatus().GetLastSeen(); at != nil {
			put(TableLastSeen, &lastSeen{Hypervisor: h.GetMetadata().GetName(), Time: at})
			h.Status.LastSeen = nil
		}
		put(TableHypervisors, h)
	}
	for _, o := range snap.GetComponents() {
		put(TableComponents, clone(o))
	}
	for _, o := range snap.GetComponentCerts() {
		put(TableComponentCerts, clone(o))
	}
	for _, o := range snap.GetTokens() {
		put(TableTokens, clone(o))
	}
	for _, o := range snap.GetVpnPeers() {
		put(TableVPNPeers, clone(o))
	}
	for _, o := range snap.GetIssued() {
		put(TableIssued, clone(o))
	}
	for _, o := range snap.GetBackups() {
		put(TableBackups, clone(o))
	}
	pos := map[string]int{}
	for _, e := range snap.GetEvents() {
		k := fmt.Sprintf("%s/%d", e.GetCluster(), e.GetIndex())
		put(TableEvents, &storedEvent{Key: eventKey(e.GetCluster(), e.GetIndex(), pos[k]), Event: clone(e)})
		pos[k]++
	}
	for table, index := range snap.GetTableIndexes() {
		put(TableIndex, &indexEntry{Table: table, Index: index})
	}
	txn.Commit()
	return s
}
