// Package state is the coordinator's state store: indexed go-memdb tables
// of the replicated resources, with watch channels for blocking queries.
//
// Only the FSM writes to a Store, always with the Raft index of the entry
// it applies; everything else reads. Readers get copies and may modify them.
// Restoring a snapshot builds a new Store; the old one is abandoned, which
// closes AbandonCh so that blocked readers wake and move to the new one.
package state

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Table names, for Store.Index.
const (
	TableConfig         = "config"
	TableServers        = "servers"
	TableClusters       = "clusters"
	TablePKI            = "pki"
	TableHypervisors    = "hypervisors"
	TableComponents     = "components"
	TableComponentCerts = "component_certs"
	TableTokens         = "tokens"
	TableEvents         = "events"
	TableVPNPeers       = "vpn_peers"
	TableIssued         = "issued"
	TableBackups        = "backups"
	TableIndex          = "index"
	// TableLastSeen holds each hypervisor's last report time apart from
	// its row, so that a heartbeat changes no hypervisor (and wakes no
	// watch of one); reads put it back in HypervisorStatus.last_seen.
	TableLastSeen = "last_seen"
)

// lastSeen is when a hypervisor last reported.
type lastSeen struct {
	Hypervisor string
	Time       *timestamppb.Timestamp
}

// withLastSeen is a copy of h with its last report time at (none when at
// is nil).
func withLastSeen(h *pb.Hypervisor, at *timestamppb.Timestamp) *pb.Hypervisor {
	h = clone(h)
	if at != nil {
		if h.Status == nil {
			h.Status = &pb.HypervisorStatus{}
		}
		h.Status.LastSeen = clone(at)
	}
	return h
}

// indexEntry records the Raft index that last changed a table.
type indexEntry struct {
	Table string
	Index uint64
}

// stringIndex indexes objects by a string that fn derives from them.
type stringIndex func(obj any) string

func (f stringIndex) FromObject(obj any) (bool, []byte, error) {
	v := f(obj)
	if v == "" {
		return false, nil, nil
	}
	return true, []byte(v + "\x00"), nil
}

func (f stringIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("want one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("argument must be a string: %#v", args[0])
	}
	return []byte(s + "\x00"), nil
}

func (f stringIndex) PrefixFromArgs(args ...any) ([]byte, error) {
	b, err := f.FromArgs(args...)
	if err != nil {
		return nil, err
	}
	return b[:len(b)-1], nil
}

func idIndex(fn stringIndex) map[string]*memdb.IndexSchema {
	return map[string]*memdb.IndexSchema{"id": {Name: "id", Unique: true, Indexer: fn}}
}

func schema() *memdb.DBSchema {
	components := idIndex(func(o any) string { return o.(*pb.Component).GetMetadata().GetName() })
	// An orphaned component belongs to no cluster (ComponentSpec.orphaned).
	components["cluster"] = &memdb.IndexSchema{Name: "cluster", AllowMissing: true,
		Indexer: stringIndex(func(o any) string {
			if spec := o.(*pb.Component).GetSpec(); !spec.GetOrphaned() {
				return spec.GetCluster()
			}
			return ""
		})}
	components["hypervisor"] = &memdb.IndexSchema{Name: "hypervisor", AllowMissing: true,
		Indexer: stringIndex(func(o any) string { return o.(*pb.Component).GetSpec().GetHypervisor() })}
	peers := idIndex(func(o any) string { return PeerKey(o.(*pb.VPNPeer).GetCluster(), o.(*pb.VPNPeer).GetName()) })
	peers["cluster"] = &memdb.IndexSchema{Name: "cluster",
		Indexer: stringIndex(func(o any) string { return o.(*pb.VPNPeer).GetCluster() })}
	issued := idIndex(func(o any) string { return o.(*pb.IssuedCert).GetSerial() })
	issued["holder"] = &memdb.IndexSchema{Name: "holder",
		Indexer: stringIndex(func(o any) string { return HolderKey(o.(*pb.IssuedCert).GetRole(), o.(*pb.IssuedCert).GetName()) })}
	backups := idIndex(func(o any) string { return BackupKey(o.(*pb.Backup).GetCluster(), o.(*pb.Backup).GetId()) })
	backups["cluster"] = &memdb.IndexSchema{Name: "cluster",
		Indexer: stringIndex(func(o any) string { return o.(*pb.Backup).GetCluster() })}
	events := idIndex(func(o any) string { return o.(*storedEvent).Key })
	events["cluster"] = &memdb.IndexSchema{Name: "cluster",
		Indexer: stringIndex(func(o any) string { return o.(*storedEvent).Event.GetCluster() })}
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		TableConfig:         {Name: TableConfig, Indexes: idIndex(func(any) string { return "config" })},
		TableServers:        {Name: TableServers, Indexes: idIndex(func(o any) string { return o.(*pb.Server).GetId() })},
		TableClusters:       {Name: TableClusters, Indexes: idIndex(func(o any) string { return o.(*pb.Cluster).GetMetadata().GetName() })},
		TablePKI:            {Name: TablePKI, Indexes: idIndex(func(o any) string { return o.(*pb.ClusterPKI).GetCluster() })},
		TableHypervisors:    {Name: TableHypervisors, Indexes: idIndex(func(o any) string { return o.(*pb.Hypervisor).GetMetadata().GetName() })},
		TableComponents:     {Name: TableComponents, Indexes: components},
		TableComponentCerts: {Name: TableComponentCerts, Indexes: idIndex(func(o any) string { return o.(*pb.ComponentCerts).GetComponent() })},
		TableTokens:         {Name: TableTokens, Indexes: idIndex(func(o any) string { return o.(*pb.Token).GetId() })},
		TableEvents:         {Name: TableEvents, Indexes: events},
		TableVPNPeers:       {Name: TableVPNPeers, Indexes: peers},
		TableIssued:         {Name: TableIssued, Indexes: issued},
		TableBackups:        {Name: TableBackups, Indexes: backups},
		TableIndex:          {Name: TableIndex, Indexes: idIndex(func(o any) string { return o.(*indexEntry).Table })},
		TableLastSeen:       {Name: TableLastSeen, Indexes: idIndex(func(o any) string { return o.(*lastSeen).Hypervisor })},
	}}
}

// HolderKey indexes issued certificates by their holder: role and name.
func HolderKey(role, name string) string { return role + "/" + name }

// BackupKey is the id of a backup: its cluster and ID.
func BackupKey(cluster, id string) string { return cluster + "/" + id }

// PeerKey is the id of a VPN peer: its cluster and node name.
func PeerKey(cluster, name string) string { return cluster + "/" + name }

// storedEvent keys an event by its cluster, the Raft index that wrote it
// and its position in that entry, so a cluster's events list in order.
type storedEvent struct {
	Key   string
	Event *pb.Event
}

func eventKey(cluster string, index uint64, pos int) string {
	return fmt.Sprintf("%s/%020d/%04d", cluster, index, pos)
}
