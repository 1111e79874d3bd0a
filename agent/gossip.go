package agent

import (
	"context"
	"encoding/hex"
	"net"
	"strconv"
	"time"

	"github.com/oneinfra/oneinfra/internal/gossip"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// metaGossipKey is where the store keeps the gossip key (hex).
const metaGossipKey = "gossip-key"

// gossipRetry is how long the agent waits before trying again to get the
// key or to start the gossip.
const gossipRetry = time.Minute

// gossipAddr is the agent's gossip listen address: --gossip-addr, else
// --address with the default port.
func (a *Agent) gossipAddr() string {
	if a.cfg.GossipAddr != "" {
		return a.cfg.GossipAddr
	}
	return net.JoinHostPort(a.cfg.Address, strconv.Itoa(gossip.DefaultPort))
}

// gossipKey is the key kept from the registration or an earlier start,
// else the one the coordinator gives now (nil when it has none).
func (a *Agent) gossipKey(ctx context.Context) ([]byte, error) {
	if k, err := hex.DecodeString(a.store.meta(metaGossipKey)); err == nil && len(k) == gossip.KeySize {
		return k, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := a.api.GetGossipConfig(cctx, &pb.GetGossipConfigRequest{Hypervisor: a.cfg.Name})
	if err != nil {
		return nil, err
	}
	if len(resp.Key) != gossip.KeySize {
		return nil, nil
	}
	if err := a.store.setMeta(metaGossipKey, hex.EncodeToString(resp.Key)); err != nil {
		return nil, err
	}
	return resp.Key, nil
}

// runGossip runs this hypervisor's gossip member ("hv/NAME") until ctx
// ends, then leaves the gossip. Gossip is advice for the coordinator's
// health decisions: without it (no key yet, the port taken) the agent runs
// and reports all the same, and says why.
func (a *Agent) runGossip(ctx context.Context) {
	var m *gossip.Member
	for m == nil {
		key, err := a.gossipKey(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			a.logger.Warn("running without gossip: cannot get the gossip key from the coordinator", "err", err, "retry", gossipRetry)
		case key == nil:
			a.logger.Warn("running without gossip: the coordinator has no gossip key yet", "retry", gossipRetry)
		default:
			m, err = gossip.Start(gossip.Config{
				Name: gossip.HypervisorMember(a.cfg.Name), Addr: a.gossipAddr(), Join: a.cfg.GossipJoin,
				Key: key, Meta: []byte(a.cfg.Name), Local: a.cfg.GossipLocal, Logger: a.logger,
			})
			if err != nil {
				a.logger.Error("running without gossip", "err", err, "retry", gossipRetry)
			}
		}
		if m == nil {
			sleep(ctx, gossipRetry)
		}
	}
	a.gossip.Store(m)
	<-ctx.Done()
	a.gossip.Store(nil)
	if err := m.Close(); err != nil {
		a.logger.Debug("leaving the gossip", "err", err)
	}
}
