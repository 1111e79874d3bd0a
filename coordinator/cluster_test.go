package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// TestThreeServers bootstraps one server, joins two through tokens, writes
// through a follower, stops the leader abruptly, keeps writing on the
// survivors, restarts the stopped server from its data dir and checks that
// every acknowledged write is on every server.
func TestThreeServers(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s1, cfg1 := bootstrapOne(t, dir)
	op1 := pb.NewOperatorClient(adminConn(t, cfg1.DataDir, s1.APIAddr()))

	tok, err := op1.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenServer, Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]*Server{"s1": s1}
	configs := map[string]Config{"s1": cfg1}
	for _, id := range []string{"s2", "s3"} {
		cfg := testConfig(t, id, dir)
		cfg.Join, cfg.Token, cfg.CAHash = s1.APIAddr(), tok.Token, tok.CaHash
		servers[id] = startServer(t, cfg)
		cfg.Join, cfg.Token, cfg.CAHash = "", "", "" // a restart needs none
		configs[id] = cfg
	}
	testutil.Eventually(t, 30*time.Second, "three voters", func() error {
		resp, err := op1.Members(ctx, &pb.MembersRequest{})
		if err != nil {
			return err
		}
		if len(resp.Members) != 3 {
			return fmt.Errorf("%d members", len(resp.Members))
		}
		for _, m := range resp.Members {
			if !m.Reachable || m.Suffrage != "Voter" {
				return fmt.Errorf("member %s: reachable %v, %s", m.Id, m.Reachable, m.Suffrage)
			}
		}
		return nil
	})

	// Writes through a follower are forwarded to the leader.
	var follower *Server
	for _, s := range servers {
		if !s.IsLeader() {
			follower = s
		}
	}
	opF := pb.NewOperatorClient(adminConn(t, cfg1.DataDir, follower.APIAddr()))
	var acked []string
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("before-%d", i)
		if err := createCluster(ctx, opF, name); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, name)
	}

	// Stop the leader as a crash would; the survivors elect another and
	// take writes within seconds.
	var leaderID string
	for id, s := range servers {
		if s.IsLeader() {
			leaderID = id
		}
	}
	if leaderID == "" {
		t.Fatal("no leader")
	}
	var survivors []string
	for id, s := range servers {
		if id != leaderID {
			survivors = append(survivors, s.APIAddr())
		}
	}
	servers[leaderID].Kill()
	killed := time.Now()
	opS := pb.NewOperatorClient(adminConn(t, cfg1.DataDir, survivors...))
	testutil.Eventually(t, 20*time.Second, "a write after the leader died", func() error {
		return createCluster(ctx, opS, "after-0")
	})
	failover := time.Since(killed)
	t.Logf("writes resumed %.2fs after the leader was stopped", failover.Seconds())
	if failover > 15*time.Second {
		t.Errorf("failover took %s", failover)
	}
	acked = append(acked, "after-0")
	for i := 1; i < 10; i++ {
		name := fmt.Sprintf("after-%d", i)
		if err := createCluster(ctx, opS, name); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, name)
	}

	// The stopped server comes back from its data dir and catches up.
	servers[leaderID] = startServer(t, configs[leaderID])
	testutil.Eventually(t, 30*time.Second, "every server holds every acknowledged write", func() error {
		for id, s := range servers {
			for _, name := range acked {
				if s.State().Cluster(nil, name) == nil {
					return fmt.Errorf("server %s lacks cluster %s (applied index %d)", id, name, s.AppliedIndex())
				}
			}
		}
		return nil
	})
	// Reads through the restarted server say how fresh they are.
	opR := pb.NewOperatorClient(adminConn(t, cfg1.DataDir, servers[leaderID].APIAddr()))
	resp, err := opR.Get(ctx, &pb.GetRequest{Kind: "clusters"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Clusters) != len(acked) || resp.Meta.Index == 0 || resp.Meta.Leader == "" || len(resp.Meta.Servers) != 3 {
		t.Errorf("read from the restarted server: %d clusters, meta %v", len(resp.Clusters), resp.Meta)
	}

	// SIGTERM of a leader hands leadership over before it stops.
	for id, s := range servers {
		if !s.IsLeader() {
			continue
		}
		if err := s.Shutdown(); err != nil {
			t.Fatalf("graceful shutdown of %s: %v", id, err)
		}
		stopped := time.Now()
		testutil.Eventually(t, 10*time.Second, "a new leader", func() error {
			for other, o := range servers {
				if other != id && o.IsLeader() {
					return nil
				}
			}
			return fmt.Errorf("no leader yet")
		})
		t.Logf("new leader %.2fs after the old one shut down cleanly", time.Since(stopped).Seconds())
		if d := time.Since(stopped); d > DefaultRaftTimings.Election {
			t.Errorf("new leader after %s: leadership was not handed over", d)
		}
		break
	}
}
