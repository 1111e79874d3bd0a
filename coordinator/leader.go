package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultVPNPool is where clusters' VPN CIDRs come from unless --vpn-pool
// says otherwise at bootstrap.
const DefaultVPNPool = "10.200.0.0/16"

// resyncInterval bounds how long the leader goes without re-checking every
// cluster, whatever the watches say.
const resyncInterval = 10 * time.Second

// reconcileGap is the least time between two passes of the leader loop:
// writes that come faster (the reports of a large fleet) are taken in by
// one pass, not one pass each.
const reconcileGap = 100 * time.Millisecond

// await returns a Raft future's error, or raft.ErrRaftShutdown once this
// server stops: a future Raft took in just as it shut down is never
// answered, and its Error would block the stop forever.
func (s *Server) await(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-s.stopCh:
		return raft.ErrRaftShutdown
	}
}

// raftApply writes one command through Raft and returns the index it got.
// Only the leader calls it: writes reach the leader through the interceptor.
func (s *Server) raftApply(t MessageType, msg proto.Message) (uint64, error) {
	data, err := s.fsm.encode(t, msg)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	f := s.raft.Apply(data, 30*time.Second)
	if err := s.await(f); err != nil {
		return 0, err
	}
	s.metrics.applyLatency.Observe(time.Since(start).Seconds())
	if err, ok := f.Response().(error); ok {
		return f.Index(), err
	}
	return f.Index(), nil
}

// monitorLeadership runs the leader loop while this server leads.
func (s *Server) monitorLeadership() {
	defer s.wg.Done()
	var stop func() // stops the running leader loop, if any
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		select {
		case <-s.stopCh:
			return
		case leading := <-s.raft.LeaderCh():
			if stop != nil {
				stop()
				stop = nil
			}
			if leading {
				stop = s.startLeaderLoop()
			}
		}
	}
}

// startLeaderLoop runs leaderLoop until the returned func is called.
func (s *Server) startLeaderLoop() func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.leaderLoop(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// leaderLoop finishes the bootstrap if needed, then keeps every cluster
// placed and its status current.
func (s *Server) leaderLoop(ctx context.Context) {
	s.logger.Info("leading")
	defer s.logger.Info("no longer leading")
	for ctx.Err() == nil {
		if err := s.await(s.raft.Barrier(30 * time.Second)); err != nil {
			s.logger.Warn("leader barrier failed", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if err := s.establishLeadership(); err != nil {
			s.logger.Warn("establishing leadership", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		break
	}
	// Health is decided apart from placement, on its own clock; it counts
	// the hypervisors' silence only from now, when this leader has applied
	// everything committed before it.
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		s.healthLoop(ctx, time.Now())
	}()
	defer func() { <-healthDone }()
	var pruned pruneMark
	for ctx.Err() == nil {
		began := time.Now()
		st := s.State()
		ws := memdb.NewWatchSet()
		ws.Add(st.AbandonCh())
		for _, table := range []string{state.TableClusters, state.TableHypervisors, state.TableComponents, state.TableComponentCerts, state.TableConfig} {
			st.Watch(ws, table) // component certs: keys given by agents
		}
		if err := s.reconcileClusters(time.Now()); err != nil {
			s.logger.Warn("reconciling clusters", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if err := s.advanceCARotation(ctx, time.Now()); err != nil {
			s.logger.Warn("moving the coordinator CA rotation on", "err", err)
		}
		if err := s.prune(&pruned, time.Now()); err != nil {
			s.logger.Warn("pruning used and expired tokens and certificates", "err", err)
		}
		if err := s.scheduleBackups(time.Now()); err != nil {
			s.logger.Warn("scheduling backups", "err", err)
		}
		wctx, cancel := context.WithTimeout(ctx, resyncInterval)
		_ = ws.WatchCtx(wctx)
		cancel()
		sleep(ctx, time.Until(began.Add(reconcileGap)))
	}
}

// pruneMark is what the last look for things to prune found: the state
// of the tokens and certificate records then, and when the first of them
// expires. Until either moves there is nothing to look for.
type pruneMark struct {
	index uint64
	due   time.Time
}

// prune forgets, in one entry, the tokens and the certificate records
// expired, when there are any. It reads them all only when they changed
// since mark or the first of them has expired.
func (s *Server) prune(mark *pruneMark, now time.Time) error {
	st := s.State().View()
	index := st.Index(state.TableTokens, state.TableIssued)
	if index == mark.index && now.Before(mark.due) {
		return nil
	}
	due := now.Add(resyncInterval)
	for _, t := range st.Tokens(nil) {
		due = earliest(due, t.Expires.AsTime())
	}
	for _, c := range st.AllIssued(nil) {
		due = earliest(due, c.NotAfter.AsTime())
	}
	if now.Before(due) {
		*mark = pruneMark{index: index, due: due}
		return nil
	}
	*mark = pruneMark{}
	_, err := s.raftApply(PruneType, &pb.PruneCommand{Time: timestamppb.New(now)})
	return err
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// establishLeadership writes what bootstrap left to the leader, and makes
// sure this server's own entry is current.
func (s *Server) establishLeadership() error {
	st := s.State()
	if st.Config(nil) == nil {
		ca := s.creds.pendingCA()
		if ca == nil {
			return fmt.Errorf("coordinator state has no configuration and this server has no CA to bootstrap it")
		}
		id := make([]byte, 8)
		if _, err := rand.Read(id); err != nil {
			return err
		}
		key, err := newGossipKey()
		if err != nil {
			return err
		}
		issued, err := s.bootstrapIssued()
		if err != nil {
			return err
		}
		cmd := &pb.InitCommand{
			Config: &pb.CoordinatorConfig{Ca: ca, VpnPool: s.cfg.VPNPool, ClusterId: hex.EncodeToString(id), GossipKey: key},
			Server: s.self(), Issued: issued,
		}
		if _, err := s.raftApply(InitType, cmd); err != nil {
			return fmt.Errorf("writing initial configuration: %w", err)
		}
	}
	if err := s.creds.dropPendingCA(); err != nil {
		return err
	}
	if err := s.ensureGossipKey(); err != nil {
		return fmt.Errorf("making the gossip key: %w", err)
	}
	for _, srv := range st.Servers(nil) {
		if srv.Id == s.cfg.ID && proto.Equal(srv, s.self()) {
			return nil
		}
	}
	_, err := s.raftApply(UpsertServerType, &pb.UpsertServerCommand{Server: s.self()})
	return err
}

// bootstrapIssued records the certificates --bootstrap issued: this
// server's, and the bootstrap operator's in DATA-DIR/admin.conf.
func (s *Server) bootstrapIssued() ([]*pb.IssuedCert, error) {
	own, err := issuedRecord(s.creds.cert.KeyPair().CertPem, vocab.RoleServer, s.cfg.ID, "", "bootstrap")
	if err != nil {
		return nil, err
	}
	out := []*pb.IssuedCert{own}
	conf, err := client.Load(filepath.Join(s.cfg.DataDir, AdminConfFile))
	if err != nil {
		s.logger.Warn("the bootstrap operator's certificate is not recorded: it can be revoked only with its CA", "err", err)
		return out, nil
	}
	admin, err := issuedRecord([]byte(conf.ClientCertificate), vocab.RoleOperator, vocab.BootstrapOperator, "", "bootstrap")
	if err != nil {
		return nil, err
	}
	return append(out, admin), nil
}

func (s *Server) self() *pb.Server {
	return &pb.Server{Id: s.cfg.ID, RaftAddress: s.raftAddr, ApiAddress: s.apiAddr}
}

// joinRaft asks the existing servers to add this one as a voter.
func (s *Server) joinRaft(ctx context.Context) error {
	conn, err := s.peers.get(s.cfg.Join)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		_, err := pb.NewPeerClient(conn).Join(ctx, &pb.PeerJoinRequest{Id: s.cfg.ID, RaftAddress: s.raftAddr, ApiAddress: s.apiAddr})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("joining raft through %s: %w", s.cfg.Join, err)
		}
		s.logger.Warn("joining raft, retrying", "through", s.cfg.Join, "err", err)
		sleep(ctx, time.Second)
	}
}

// addVoter makes a server a voter (on the leader) and records its addresses.
func (s *Server) addVoter(srv *pb.Server) error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	present := false
	for _, v := range f.Configuration().Servers {
		if v.ID == raft.ServerID(srv.Id) && v.Address == raft.ServerAddress(srv.RaftAddress) {
			present = true
		}
	}
	if !present {
		if err := s.await(s.raft.AddVoter(raft.ServerID(srv.Id), raft.ServerAddress(srv.RaftAddress), 0, 30*time.Second)); err != nil {
			return fmt.Errorf("adding voter %s: %w", srv.Id, err)
		}
	}
	_, err := s.raftApply(UpsertServerType, &pb.UpsertServerCommand{Server: srv})
	return err
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
