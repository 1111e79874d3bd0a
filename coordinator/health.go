package coordinator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/oneinfra/oneinfra/coordinator/health"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/gossip"
	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// newGossipKey makes the coordinator's gossip encryption key.
func newGossipKey() ([]byte, error) {
	k := make([]byte, gossip.KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

// ensureGossipKey gives a coordinator bootstrapped before gossip existed
// its key; the FSM ignores it when one is there already.
func (s *Server) ensureGossipKey() error {
	if len(s.State().Config(nil).GetGossipKey()) > 0 {
		return nil
	}
	k, err := newGossipKey()
	if err != nil {
		return err
	}
	_, err = s.raftApply(SetGossipKeyType, &pb.SetGossipKeyCommand{Key: k})
	return err
}

// runGossip joins the gossip as an observer ("server/ID") once the
// replicated state holds the key, and leaves it when the server stops.
// Without --gossip-addr the server has no gossip: health then rests on
// the agents' reports alone.
func (s *Server) runGossip() {
	defer s.wg.Done()
	if s.cfg.GossipAddr == "" {
		return
	}
	var key []byte
	for {
		st := s.State()
		ws := memdb.NewWatchSet()
		ws.Add(st.AbandonCh())
		if key = st.Config(ws).GetGossipKey(); len(key) > 0 {
			break
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.stopCh:
				cancel()
			case <-ctx.Done():
			}
		}()
		_ = ws.WatchCtx(ctx)
		cancel()
		select {
		case <-s.stopCh:
			return
		default:
		}
	}
	cfg := gossip.Config{
		Name: gossip.ServerMember(s.cfg.ID), Addr: s.cfg.GossipAddr, Join: s.cfg.GossipJoin,
		Key: key, Meta: []byte(gossip.ServerMember(s.cfg.ID)), Local: s.cfg.GossipLocal, Logger: s.logger,
	}
	if host, port, err := net.SplitHostPort(s.cfg.GossipAddr); err == nil {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			// Listening on every address: advertise the server's host.
			if adv, _, err := net.SplitHostPort(s.apiAddr); err == nil && port != "0" {
				cfg.Advertise = net.JoinHostPort(adv, port)
			}
		}
	}
	m, err := gossip.Start(cfg)
	if err != nil {
		s.logger.Error("gossip not started; hypervisor health rests on the agents' reports alone", "err", err)
		return
	}
	s.gossip.Store(m)
	<-s.stopCh
	s.gossip.Store(nil)
	if err := m.Close(); err != nil {
		s.logger.Debug("leaving the gossip", "err", err)
	}
}

// GossipAddr is the address this server's gossip member advertises, or ""
// when it has none (yet).
func (s *Server) GossipAddr() string {
	if m := s.gossip.Load(); m != nil {
		return m.Addr()
	}
	return ""
}

// GossipView is what this server's gossip member sees (nil without one).
func (s *Server) GossipView() map[string]gossip.Observation {
	if m := s.gossip.Load(); m != nil {
		return m.View()
	}
	return nil
}

// healthInterval is how often the leader re-decides every hypervisor's
// health: often enough to act within a tenth of SuspectAfter.
func (s *Server) healthInterval() time.Duration {
	return min(max(s.cfg.Health.Defaulted().SuspectAfter/10, 100*time.Millisecond), 5*time.Second)
}

// healthLoop runs while this server leads: it decides each hypervisor's
// health and commits the transitions. leaderSince is when this leader's
// barrier completed: it blames no silence from before.
func (s *Server) healthLoop(ctx context.Context, leaderSince time.Time) {
	t := time.NewTicker(s.healthInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.checkHealth(ctx, leaderSince, time.Now()); err != nil && ctx.Err() == nil {
			s.logger.Warn("deciding hypervisor health", "err", err)
		}
	}
}

// checkHealth decides every hypervisor's health now and commits what
// changed, one entry per hypervisor. It decides nothing unless this server
// still leads with a quorum behind it.
func (s *Server) checkHealth(ctx context.Context, leaderSince, now time.Time) error {
	rules := s.cfg.Health.Defaulted()
	var view map[string]gossip.Observation
	if m := s.gossip.Load(); m != nil {
		view = m.View()
	}
	st := s.State()
	type change struct {
		h *pb.Hypervisor
		d health.Decision
	}
	var changes []change
	for _, h := range st.Hypervisors(nil) {
		in := health.Input{
			Name: h.Metadata.Name, Current: h.GetStatus().GetHealth(), Now: now,
			LeaderSince: leaderSince,
		}
		if ls := h.GetStatus().GetLastSeen(); ls != nil {
			in.LastSeen = ls.AsTime()
		}
		if o, ok := view[gossip.HypervisorMember(h.Metadata.Name)]; ok {
			in.Gossip = &o
		}
		if d := rules.Decide(in); d.Changed {
			changes = append(changes, change{h, d})
		}
	}
	if len(changes) == 0 {
		return nil
	}
	// A leader cut off from its quorum must decide nothing: make sure the
	// others still follow it (Raft would refuse the entries anyway, after
	// a while).
	if err := s.await(s.raft.VerifyLeader()); err != nil {
		return fmt.Errorf("not committing health changes: %w", err)
	}
	var errs []error
	for _, c := range changes {
		if ctx.Err() != nil {
			return nil
		}
		cmd := healthCommand(st, c.h, c.d, now)
		if _, err := s.raftApply(SetHealthType, cmd); err != nil {
			if errors.Is(err, ErrStaleHealth) || errors.Is(err, state.ErrNotFound) {
				continue // it reported (or went) meanwhile: decided again next round
			}
			errs = append(errs, fmt.Errorf("hypervisor %s: %w", c.h.Metadata.Name, err))
			continue
		}
		from := c.h.GetStatus().GetHealth()
		if from == "" {
			from = resources.HealthAlive
		}
		s.metrics.healthTransitions.WithLabelValues(from, c.d.Health).Inc()
		level := s.logger.Warn
		if c.d.Health == resources.HealthAlive {
			level = s.logger.Info
		}
		level("hypervisor health changed", "hypervisor", c.h.Metadata.Name, "from", from, "to", c.d.Health, "why", c.d.Message)
	}
	return errors.Join(errs...)
}

// healthCommand records a decision: health, the Healthy condition, and an
// event on each cluster with a component on the hypervisor.
func healthCommand(st *state.Store, h *pb.Hypervisor, d health.Decision, now time.Time) *pb.SetHealthCommand {
	name := h.Metadata.Name
	cmd := &pb.SetHealthCommand{
		Hypervisor: name, Health: d.Health, LastSeen: h.GetStatus().GetLastSeen(),
		Condition: &pb.Condition{
			Type: health.ConditionHealthy, Status: d.Status, Reason: d.Reason, Message: d.Message,
			LastTransitionTime: timestamppb.New(now),
		},
	}
	typ := "Warning"
	if d.Health == resources.HealthAlive {
		typ = "Normal"
	}
	reason := "Hypervisor" + capitalize(d.Health)
	seen := map[string]bool{}
	for _, comp := range st.ComponentsOnHypervisor(nil, name) {
		if c := comp.Spec.Cluster; !seen[c] {
			seen[c] = true
			cmd.Events = append(cmd.Events, state.Event(c, typ, reason,
				fmt.Sprintf("hypervisor %s is %s: %s", name, d.Health, d.Message), now))
		}
	}
	return cmd
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
