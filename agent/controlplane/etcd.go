package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
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
	kp := as.Certs[pki.APIServerEtcdClientCert]
	if kp == nil {
		return nil, fmt.Errorf("assignment lacks the %s certificate", pki.APIServerEtcdClientCert)
	}
	cert, err := tls.X509KeyPair(kp.CertPem, kp.KeyPem)
	if err != nil {
		return nil, err
	}
	pool, err := tlsutil.CertPool(as.CaCerts[pki.EtcdServerCA])
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
// When another member answers, this one is added as a learner (once) and
// joins the existing cluster; when none does, the first member by name
// starts a new cluster and the others wait for it.
func DecideBootstrap(ctx context.Context, as *pb.Assignment, paths host.Paths) (EtcdBootstrap, error) {
	m, err := self(as)
	if err != nil {
		return EtcdBootstrap{}, err
	}
	if _, err := os.Stat(filepath.Join(paths.DataDir(), "etcd", "member")); err == nil {
		// Data from an earlier start: etcd ignores the initial flags.
		return EtcdBootstrap{State: "existing", InitialCluster: m.name + "=" + m.peerURL()}, nil
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
	if first := oldestPeer(as.EtcdPeers); first != m.name {
		return EtcdBootstrap{}, fmt.Errorf("%w (%s)", ErrWaitingForFirstMember, first)
	}
	return EtcdBootstrap{State: "new", InitialCluster: m.name + "=" + m.peerURL()}, nil
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
	// A member the coordinator dropped (its hypervisor died) is still
	// listed until a survivor removes it; an initial cluster naming it
	// would never start, since etcd checks it against the members it has.
	// So is a predecessor that used this host port (ports are reused)
	// until its agent or a survivor takes it out.
	peers := peerNames(as)
	for _, mem := range list.Members {
		if stranger(mem, peers, m) {
			return EtcdBootstrap{}, fmt.Errorf("%w for etcd member %s, no longer a peer, to be removed before joining", host.ErrWaiting, mem.Name)
		}
	}
	present := false
	for _, mem := range list.Members {
		present = present || hasPeerURL(mem, m.peerURL())
	}
	if !present {
		added, err := cli.MemberAddAsLearner(ctx, []string{m.peerURL()})
		if errors.Is(err, rpctypes.ErrTooManyLearners) || errors.Is(err, rpctypes.ErrUnhealthy) {
			// Another learner is catching up: one joins at a time.
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
		if hasPeerURL(mem, m.peerURL()) {
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
	for _, mem := range list.Members {
		if mem.Name == m.name {
			return nil
		}
	}
	return fmt.Errorf("etcd member %s is not started yet", m.name)
}

// RemoveMember takes this member out of its etcd cluster through the other
// members, before its pod is removed. With no other member (the whole
// cluster goes), there is nothing to do.
func RemoveMember(ctx context.Context, as *pb.Assignment, _ host.Paths) error {
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

// RemoveStrangers removes from the etcd cluster the members that are not
// among the assignment's etcd peers: replicas the coordinator moved off a
// dead hypervisor, whose agent cannot run RemoveMember itself. It acts
// only when this member is a voter and the member list is read through a
// quorum (a linearizable read), never removes this member, and leaves
// alone a member that has not started yet (no name: a learner being
// added), whose name is among the peers, or that still answers (the
// assignment may predate it). Removing a member another replica removed
// meanwhile is not an error. It returns the names of the members it
// removed.
func RemoveStrangers(ctx context.Context, as *pb.Assignment, _ host.Paths) ([]string, error) {
	m, err := self(as)
	if err != nil {
		return nil, err
	}
	peers := peerNames(as)
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
		if !stranger(mem, peers, m) {
			continue
		}
		if answers(ctx, cli, mem) {
			// A live member may be one placed after the assignment this
			// replica holds (a replacement that just joined): only
			// members that are gone are removed.
			continue
		}
		if _, err := cli.MemberRemove(ctx, mem.ID); err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) {
			errs = append(errs, fmt.Errorf("removing etcd member %s, no longer a peer: %w", mem.Name, err))
			continue
		}
		removed = append(removed, mem.Name)
	}
	return removed, errors.Join(errs...)
}

// peerNames are the names of a replica's assigned etcd peers.
func peerNames(as *pb.Assignment) map[string]bool {
	names := map[string]bool{}
	for _, p := range as.EtcdPeers {
		names[p.Name] = true
	}
	return names
}

// stranger reports whether an etcd member is none of the assigned peers:
// a started member (a learner being added has no name yet) whose name is
// neither self's nor a peer's. Names, not peer URLs, tell members apart:
// a host port freed by a removed replica is given to the next one.
func stranger(mem *etcdserverpb.Member, peers map[string]bool, self member) bool {
	return mem.Name != "" && mem.Name != self.name && !peers[mem.Name]
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

// answers reports whether an etcd member answers on one of its client
// URLs.
func answers(ctx context.Context, cli *clientv3.Client, mem *etcdserverpb.Member) bool {
	for _, u := range mem.ClientURLs {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Status(sctx, u)
		cancel()
		if err == nil {
			return true
		}
	}
	return false
}
