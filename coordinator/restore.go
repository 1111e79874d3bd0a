package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/oneinfra/oneinfra/coordinator/keyring"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
)

// restore installs a saved snapshot through Raft on the leader, merged
// with the current state so that nothing of the present is lost that the
// snapshot cannot know of (mergeRestore). A snapshot of another
// coordinator is refused unless force; dryRun only says what would change.
func (s *Server) restore(data []byte, force, dryRun bool) (*pb.SnapshotRestoreResponse, error) {
	snap, err := DecodeSnapshot(bytes.NewReader(data), s.keys)
	if errors.Is(err, keyring.ErrOtherKey) {
		return nil, invalid("the snapshot is of another coordinator, sealed with its keyring: %v; restore it on servers started (--bootstrap) with that coordinator's DATA-DIR/%s", err, keyring.FileName)
	}
	if err != nil {
		return nil, invalid("%v", err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur := s.State().Snapshot()
	if theirs, ours := snap.GetConfig().GetClusterId(), cur.GetConfig().GetClusterId(); theirs != ours && !force {
		return nil, invalid("the snapshot is of another coordinator (ID %s; this one is %s): restore it with --force to replace this coordinator's clusters, hypervisors and tokens with its", theirs, ours)
	}
	changes := mergeRestore(cur, snap, time.Now())
	if dryRun {
		return &pb.SnapshotRestoreResponse{Changes: changes}, nil
	}
	// Everything restored counts as changed now, so that blocking queries
	// with an index from before the restore wake and read it.
	next := s.raft.LastIndex() + 1
	for table := range snap.TableIndexes {
		snap.TableIndexes[table] = next
	}
	var buf bytes.Buffer
	if err := EncodeSnapshot(&buf, snap, s.keys); err != nil {
		return nil, err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(buf.Len())}
	if err := s.raft.Restore(meta, &buf, time.Minute); err != nil {
		return nil, fmt.Errorf("restoring snapshot: %w", err)
	}
	for _, c := range changes {
		s.logger.Info("snapshot restored", "change", c)
	}
	return &pb.SnapshotRestoreResponse{Index: s.raft.AppliedIndex(), Changes: changes}, nil
}

// mergeRestore turns snap into the state a restore installs, given the
// current state cur, and says what changes. A snapshot restores the
// clusters, their placements and keys, the tokens and the VPN peers of its
// time; what it cannot know of stays:
//
//   - the coordinator's configuration (its CA) and its servers;
//   - the hypervisors registered now (machines do not go back in time);
//   - revocations: a token or certificate revoked now stays revoked, one
//     made since stays, one forgotten since (expired) does not come back;
//   - the records of backups taken since (they are in the target);
//   - tenant data: a component placed now that the snapshot does not have
//     stays on its hypervisor, orphaned (stopped, its files kept) until an
//     operator deletes it.
func mergeRestore(cur, snap *pb.Snapshot, now time.Time) []string {
	var changes []string
	change := func(format string, args ...any) { changes = append(changes, fmt.Sprintf(format, args...)) }
	snap.Config, snap.Servers = cur.Config, cur.Servers

	clusters := map[string]bool{}
	for _, c := range snap.Clusters {
		clusters[c.Metadata.Name] = true
	}
	for _, c := range cur.Clusters {
		if !clusters[c.Metadata.Name] {
			change("cluster %s: not in the snapshot; its components are stopped with their data kept (orphaned)", c.Metadata.Name)
		}
	}
	existing := names(cur.Clusters, func(c *pb.Cluster) string { return c.Metadata.Name })
	for _, c := range snap.Clusters {
		if !existing[c.Metadata.Name] {
			change("cluster %s: back from the snapshot", c.Metadata.Name)
		}
	}

	registered := names(cur.Hypervisors, func(h *pb.Hypervisor) string { return h.Metadata.Name })
	hypervisors := cur.Hypervisors
	for _, h := range snap.Hypervisors {
		if !registered[h.Metadata.Name] {
			hypervisors = append(hypervisors, h)
			change("hypervisor %s: back from the snapshot (not registered now)", h.Metadata.Name)
		}
	}
	snap.Hypervisors = hypervisors

	snap.Tokens = mergeRevocable(cur.Tokens, snap.Tokens,
		func(t *pb.Token) string { return t.Id },
		func(now, then *pb.Token) {
			then.Revoked = then.Revoked || now.Revoked
			then.Uses = max(then.Uses, now.Uses)
		},
		func(id string) { change("token %s: expired or revoked since the snapshot: not restored", id) })
	snap.Issued = mergeRevocable(cur.Issued, snap.Issued,
		func(c *pb.IssuedCert) string { return c.Serial },
		func(now, then *pb.IssuedCert) {
			if now.Revoked && !then.Revoked {
				then.Revoked, then.RevokedAt, then.RevokedReason = true, now.RevokedAt, now.RevokedReason
			}
		}, nil)

	placed := names(snap.Components, func(c *pb.Component) string { return c.Metadata.Name })
	for _, comp := range cur.Components {
		if placed[comp.Metadata.Name] {
			continue
		}
		if !comp.Spec.Orphaned {
			change("component %s (cluster %s) on %s: not in the snapshot; stopped, its data kept, until `delete component %s`",
				comp.Metadata.Name, comp.Spec.Cluster, comp.Spec.Hypervisor, comp.Metadata.Name)
		}
		comp = proto.Clone(comp).(*pb.Component)
		comp.Spec.Orphaned = true
		comp.Status = &pb.ComponentStatus{State: vocab.StateOrphaned, Message: fmt.Sprintf("not in the state a snapshot restored at %s: stopped, its files kept until it is deleted", now.UTC().Format(time.RFC3339))}
		snap.Components = append(snap.Components, comp)
	}

	// The peers of the snapshot's clusters, as they are now if joined
	// since; the records of backups taken since (they are in the target).
	snap.VpnPeers = unionByKey(snap.VpnPeers, cur.VpnPeers,
		func(p *pb.VPNPeer) string { return p.Cluster + "/" + p.Name }, func(p *pb.VPNPeer) bool { return clusters[p.Cluster] })
	snap.Backups = unionByKey(snap.Backups, cur.Backups,
		func(b *pb.Backup) string { return b.Cluster + "/" + b.Id }, func(b *pb.Backup) bool { return clusters[b.Cluster] })
	if len(changes) == 0 {
		change("nothing: the snapshot is the current state")
	}
	return changes
}

// mergeRevocable keeps of then (the snapshot's) what now (the current
// state's) still has, with merge applied to each pair, plus what now has
// alone; gone is told of each one of then that now forgot.
func mergeRevocable[T proto.Message](now, then []T, key func(T) string, merge func(now, then T), gone func(string)) []T {
	current := map[string]T{}
	for _, x := range now {
		current[key(x)] = x
	}
	var out []T
	kept := map[string]bool{}
	for _, x := range then {
		k := key(x)
		n, ok := current[k]
		if !ok {
			if gone != nil {
				gone(k)
			}
			continue
		}
		x = proto.Clone(x).(T)
		merge(n, x)
		out = append(out, x)
		kept[k] = true
	}
	for _, x := range now {
		if !kept[key(x)] {
			out = append(out, x)
		}
	}
	return out
}

// unionByKey is then's and now's objects that keep keeps, now's winning
// for one key, sorted by key.
func unionByKey[T any](then, now []T, key func(T) string, keep func(T) bool) []T {
	byKey := map[string]T{}
	for _, list := range [][]T{then, now} {
		for _, x := range list {
			if keep(x) {
				byKey[key(x)] = x
			}
		}
	}
	keys := slices.Sorted(maps.Keys(byKey))
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out
}

// names is the set of the objects' names.
func names[T any](objs []T, name func(T) string) map[string]bool {
	out := map[string]bool{}
	for _, o := range objs {
		out[name(o)] = true
	}
	return out
}
