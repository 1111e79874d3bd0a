package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ErrWaitingForFirstMember: no etcd member answers yet and this one is not
// the one that starts the cluster; the agent tries again later.
var ErrWaitingForFirstMember = fmt.Errorf("%w for the first etcd member", host.ErrWaiting)

// errNoMemberAnswers: no other etcd member answered the member list.
var errNoMemberAnswers = errors.New("no etcd member answers")

// etcdClient connects to the given members with the API server's etcd
// client certificate.
func etcdClient(as *pb.Assignment, endpoints []string) (*clientv3.Client, error) {
	kp := as.Certs[vocab.APIServerEtcdClientCert]
	if kp == nil {
		return nil, fmt.Errorf("assignment lacks the %s certificate", vocab.APIServerEtcdClientCert)
	}
	cert, err := tls.X509KeyPair(kp.CertPem, kp.KeyPem)
	if err != nil {
		return nil, err
	}
	pool, err := tlsutil.CertPool(as.CaCerts[vocab.EtcdServerCA])
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 3 * time.Second,
		TLS:         &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		Logger:      zap.NewNop(),
	})
}

// clientEndpoints lists the etcd client URLs of the cluster's members,
// without this one's when others is set.
func clientEndpoints(as *pb.Assignment, self string, others bool) []string {
	var out []string
	for _, e := range as.EtcdClients {
		if others && e.Name == self {
			continue
		}
		out = append(out, url(e.Address, e.Port))
	}
	return out
}

// DecideBootstrap decides how this member's etcd starts the first time.
// A replica placed with its cluster's first members starts with all of
// them as a new cluster (etcd's static bootstrap), on its first decision
// only: first is false once a repair discarded one (the member was removed,
// or never started so). Otherwise, when another member answers, this one
// is added as a learner (once) and joins the existing cluster; when none
// does, the first member by name of a cluster placed one at a time starts
// it, on its first decision, and the others wait for it.
func DecideBootstrap(ctx context.Context, as *pb.Assignment, paths host.Paths, first bool) (EtcdBootstrap, error) {
	m, err := self(as)
	if err != nil {
		return EtcdBootstrap{}, err
	}
	if hasWAL(paths) {
		// Data from an earlier start: etcd ignores the initial flags.
		return EtcdBootstrap{State: "existing", InitialCluster: m.name + "=" + m.peerURL()}, nil
	}
	if initial := initialCluster(as, m); first && initial != "" {
		return EtcdBootstrap{State: "new", InitialCluster: initial}, nil
	}
	if others := clientEndpoints(as, m.name, true); len(others) > 0 {
		joined, err := join(ctx, as, m, others)
		if err == nil {
			return joined, nil
		}
		if !errors.Is(err, errNoMemberAnswers) {
			return EtcdBootstrap{}, err
		}
	}
	// A member placed with others as a new cluster's first, or deciding
	// again after a repair (which only acts while a quorum of the others
	// answers), belongs to a cluster that exists or is forming: started
	// alone, it would split from it.
	if len(as.GetComponent().GetSpec().GetEtcdInitialCluster()) > 0 || !first {
		return EtcdBootstrap{}, fmt.Errorf("%w for a member of its cluster to answer", host.ErrWaiting)
	}
	if first := oldestPeer(as.EtcdPeers); first != m.name {
		return EtcdBootstrap{}, fmt.Errorf("%w (%s)", ErrWaitingForFirstMember, first)
	}
	return EtcdBootstrap{State: "new", InitialCluster: m.name + "=" + m.peerURL()}, nil
}

// initialCluster is the --initial-cluster of the members placed together
// with m (ComponentSpec.etcd_initial_cluster), or "" when m was not one
// of them or its peer URL has changed since.
func initialCluster(as *pb.Assignment, m member) string {
	var initial []string
	placed := false
	for _, e := range as.GetComponent().GetSpec().GetEtcdInitialCluster() {
		u := url(e.Address, e.Port)
		placed = placed || (e.Name == m.name && u == m.peerURL())
		initial = append(initial, e.Name+"="+u)
	}
	if !placed {
		return ""
	}
	sort.Strings(initial)
	return strings.Join(initial, ",")
}

// oldestPeer names the replica placed first among peers. Replica names
// end in an index that only grows (demo-cp-9 before demo-cp-10), so it is
// the shortest name, then the lowest: never a replica placed later.
func oldestPeer(peers []*pb.Endpoint) string {
	oldest := ""
	for _, p := range peers {
		if oldest == "" || len(p.Name) < len(oldest) || (len(p.Name) == len(oldest) && p.Name < oldest) {
			oldest = p.Name
		}
	}
	return oldest
}

// join adds this member to the running cluster as a learner, unless it is
// listed already, and returns the initial cluster it must start with.
func join(ctx context.Context, as *pb.Assignment, m member, endpoints []string) (EtcdBootstrap, error) {
	cli, err := etcdClient(as, endpoints)
	if err != nil {
		return EtcdBootstrap{}, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return EtcdBootstrap{}, errNoMemberAnswers
	}
	// A member the coordinator has removed is listed until it leaves (by
	// itself, or through a survivor when its hypervisor is dead); an
	// initial cluster naming it would fail once it is gone, since etcd
	// checks it against the members it has. So is a predecessor that had
	// this host port (ports are reused): it is gone too.
	for _, mem := range list.Members {
		if mem.Name != "" && mem.Name != m.name && gone(as, mem.Name) {
			return EtcdBootstrap{}, fmt.Errorf("%w for etcd member %s, which the coordinator removed, to leave before joining", host.ErrWaiting, mem.Name)
		}
	}
	present := slices.ContainsFunc(list.Members, func(mem *etcdserverpb.Member) bool { return isSelf(mem, m) })
	if !present {
		added, err := cli.MemberAddAsLearner(ctx, []string{m.peerURL()})
		if errors.Is(err, rpctypes.ErrTooManyLearners) {
			// Another learner is catching up (one joins at a time), or
			// one was added for a replica removed before it started.
			stale, rerr := removeStaleLearners(ctx, cli, as, list.Members)
			if rerr != nil {
				return EtcdBootstrap{}, rerr
			}
			return EtcdBootstrap{}, fmt.Errorf("%w to join etcd as a learner (%v; stale learners removed: %v)", host.ErrWaiting, err, stale)
		}
		if errors.Is(err, rpctypes.ErrUnhealthy) || errors.Is(err, rpctypes.ErrMemberNotFound) {
			// Refused for a while after a membership change (the leader
			// checks its peers' connections; a retried add can meet the
			// ID of the member just removed).
			return EtcdBootstrap{}, fmt.Errorf("%w to join etcd as a learner: %v", host.ErrWaiting, err)
		}
		if err != nil {
			return EtcdBootstrap{}, fmt.Errorf("adding etcd member %s as a learner: %w", m.name, err)
		}
		list.Members = added.Members
	}
	// This member by its own name, the others as they call themselves (a
	// learner not started yet has no name, as etcdctl writes it).
	initial := []string{m.name + "=" + m.peerURL()}
	for _, mem := range list.Members {
		if isSelf(mem, m) {
			continue
		}
		for _, u := range mem.PeerURLs {
			initial = append(initial, mem.Name+"="+u)
		}
	}
	sort.Strings(initial)
	return EtcdBootstrap{State: "existing", InitialCluster: strings.Join(initial, ",")}, nil
}

// PromoteLearners makes this member a voter once it has caught up. It is
// a no-op for a voter; an error says why it is not one yet.
func PromoteLearners(ctx context.Context, as *pb.Assignment, paths host.Paths) error {
	m, err := self(as)
	if err != nil {
		return err
	}
	cli, err := etcdClient(as, clientEndpoints(as, m.name, false))
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("listing etcd members: %w", err)
	}
	for _, mem := range list.Members {
		if mem.Name != m.name || !mem.IsLearner {
			continue
		}
		if _, err := cli.MemberPromote(ctx, mem.ID); err != nil {
			return fmt.Errorf("etcd member %s is a learner not promoted yet: %w", m.name, err)
		}
	}
	// A member started has published its client URLs (one of a static
	// bootstrap is listed by name before).
	for _, mem := range list.Members {
		if mem.Name == m.name && len(mem.ClientURLs) > 0 {
			return nil
		}
	}
	return fmt.Errorf("etcd member %s is not started yet", m.name)
}

// RemoveMember takes this member out of its etcd cluster through the other
// members, before its pod is removed. With no other member (the whole
// cluster goes), there is nothing to do.
func RemoveMember(ctx context.Context, as *pb.Assignment, _ host.Paths) error {
	if as.Certs[vocab.APIServerEtcdClientCert] == nil {
		// Removed before it had certificates: it never joined etcd.
		return nil
	}
	m, err := self(as)
	if err != nil {
		return err
	}
	others := clientEndpoints(as, m.name, true)
	if len(others) == 0 {
		return nil
	}
	cli, err := etcdClient(as, others)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("listing etcd members to remove %s: %w", m.name, err)
	}
	for _, mem := range list.Members {
		// By name, or by peer URL while it has not started (no name yet):
		// a started member at this URL with another name is not this one.
		if mem.Name == m.name || (mem.Name == "" && hasPeerURL(mem, m.peerURL())) {
			if _, err := cli.MemberRemove(ctx, mem.ID); err != nil {
				return fmt.Errorf("removing etcd member %s: %w", m.name, err)
			}
		}
	}
	return nil
}

// RemoveGone removes from the etcd cluster the members that the
// coordinator's view in the assignment says are gone (see gone): replicas
// moved off a dead hypervisor, whose agent cannot run RemoveMember, and
// any replica removed for good that is still listed. It acts only when
// this member is a voter and the member list is read through a quorum (a
// linearizable read). A member added for a replica that still exists, or
// for one placed after this view, is never removed, whether it answers or
// not. Removing a member another replica removed meanwhile is not an
// error. It returns the names of the members it removed.
func RemoveGone(ctx context.Context, as *pb.Assignment, _ host.Paths) ([]string, error) {
	m, err := self(as)
	if err != nil {
		return nil, err
	}
	cli, err := etcdClient(as, clientEndpoints(as, m.name, false))
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx) // linearizable: fails without a quorum
	if err != nil {
		return nil, fmt.Errorf("listing etcd members through a quorum: %w", err)
	}
	voter := false
	for _, mem := range list.Members {
		voter = voter || (mem.Name == m.name && !mem.IsLearner)
	}
	if !voter {
		return nil, nil
	}
	var removed []string
	var errs []error
	for _, mem := range list.Members {
		if mem.Name == "" || mem.Name == m.name || !gone(as, mem.Name) {
			continue
		}
		if _, err := cli.MemberRemove(ctx, mem.ID); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
			errs = append(errs, fmt.Errorf("removing etcd member %s, which the coordinator removed: %w", mem.Name, err))
			continue
		}
		removed = append(removed, mem.Name)
	}
	return removed, errors.Join(errs...)
}

// gone reports whether the coordinator's view in as says that the etcd
// member called name is gone for good: it is named as a replica of the
// cluster placed before the view (its index below the floor; names are
// never given twice) and is not among the view's members. A name at or
// above the floor, or not a replica's, is never gone.
func gone(as *pb.Assignment, name string) bool {
	n, ok := resources.ComponentIndex(as.GetComponent().GetSpec().GetCluster(), resources.RoleControlPlane, name)
	if !ok || uint32(n) >= as.GetReplicaFloor() {
		return false
	}
	return !slices.ContainsFunc(as.GetEtcdMembers(), func(e *pb.Endpoint) bool { return e.Name == name })
}

// removeStaleLearners removes the learners that never started (no name)
// at a peer URL of none of the view's members: added for a replica that
// was removed before its etcd ran, they would keep every other learner
// out. It returns their peer URLs.
func removeStaleLearners(ctx context.Context, cli *clientv3.Client, as *pb.Assignment, members []*etcdserverpb.Member) ([]string, error) {
	known := map[string]bool{}
	for _, e := range as.GetEtcdMembers() {
		known[url(e.Address, e.Port)] = true
	}
	var removed []string
	for _, mem := range members {
		if mem.Name != "" || !mem.IsLearner || slices.ContainsFunc(mem.PeerURLs, func(u string) bool { return known[u] }) {
			continue
		}
		if _, err := cli.MemberRemove(ctx, mem.ID); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
			return removed, fmt.Errorf("removing a stale etcd learner at %v: %w", mem.PeerURLs, err)
		}
		removed = append(removed, mem.PeerURLs...)
	}
	return removed, nil
}

// isSelf reports whether an etcd member is m: by name, or by peer URL
// while it has not started (a learner has no name until then). A started
// member at m's URL with another name is a predecessor on that port.
func isSelf(mem *etcdserverpb.Member, m member) bool {
	return mem.Name == m.name || (mem.Name == "" && hasPeerURL(mem, m.peerURL()))
}

// hasWAL reports whether this member's etcd has started before: its data
// dir has a write-ahead log (etcd makes its bbolt file earlier, even when
// it then refuses its initial cluster).
func hasWAL(paths host.Paths) bool {
	wals, _ := filepath.Glob(filepath.Join(paths.DataDir(), "etcd", "member", "wal", "*.wal"))
	return len(wals) > 0
}

// hasPeerURL reports whether an etcd member listens on the peer URL u.
func hasPeerURL(mem *etcdserverpb.Member, u string) bool {
	for _, p := range mem.PeerURLs {
		if p == u {
			return true
		}
	}
	return false
}

// Repair is what a replica's etcd member needs when its stored bootstrap
// decision, or its data, can no longer work.
type Repair int

const (
	// NoRepair: nothing is wrong that a repair would mend (or nothing can
	// tell: no quorum of the other members answers).
	NoRepair Repair = iota
	// Redecide: etcd never started with the stored decision (it has no
	// write-ahead log) and keeps failing, e.g. because the membership
	// changed before its first start: the decision is made again from the
	// members etcd lists.
	Redecide
	// Rejoin: the cluster no longer lists this member, which has run (it
	// was removed): its data is set aside and it joins again as a learner.
	Rejoin
)

// Diagnose tells whether this replica's etcd member needs a Repair, and
// why. failing says its etcd container keeps exiting. It decides from the
// member list read through a quorum of the other members only, so a
// member that cannot reach them, or the lone member of a cluster, is never
// repaired.
func Diagnose(ctx context.Context, as *pb.Assignment, paths host.Paths, failing bool) (Repair, string) {
	m, err := self(as)
	if err != nil {
		return NoRepair, ""
	}
	started := hasWAL(paths)
	others := clientEndpoints(as, m.name, true)
	if (!started && !failing) || len(others) == 0 {
		return NoRepair, ""
	}
	cli, err := etcdClient(as, others)
	if err != nil {
		return NoRepair, ""
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx) // linearizable: a quorum's view
	if err != nil {
		return NoRepair, ""
	}
	listed := slices.ContainsFunc(list.Members, func(mem *etcdserverpb.Member) bool { return isSelf(mem, m) })
	switch {
	case started && !listed:
		return Rejoin, fmt.Sprintf("etcd member %s is not in its cluster any more (a quorum lists %d others): it was removed; its data is set aside and it joins again as a learner",
			m.name, len(list.Members))
	case !started && failing:
		return Redecide, fmt.Sprintf("etcd member %s keeps failing to start for the first time: its bootstrap decision is made again from the %d members etcd lists",
			m.name, len(list.Members))
	}
	return NoRepair, ""
}

// SetAsideData moves this member's etcd data out of etcd's way, to
// DATA-DIR/etcd-removed (replacing what an earlier repair left there), so
// that it can join its cluster again; the data of a removed member is the
// cluster's past, kept for inspection only.
func SetAsideData(paths host.Paths) error {
	aside := filepath.Join(paths.DataDir(), "etcd-removed")
	if err := os.RemoveAll(aside); err != nil {
		return err
	}
	err := os.Rename(filepath.Join(paths.DataDir(), "etcd"), aside)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
