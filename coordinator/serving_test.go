package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/testutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A server reports itself serving while it has a leader: left alone of
// three it stops serving, and serves again once a peer is back.
func TestServingStatus(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s1, cfg1 := bootstrapOne(t, dir)
	conn := adminConn(t, cfg1.DataDir, s1.APIAddr())
	op := pb.NewOperatorClient(conn)
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenServer, Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]*Server{}
	configs := map[string]Config{}
	for _, id := range []string{"s2", "s3"} {
		cfg := testConfig(t, id, dir)
		cfg.Join, cfg.Token, cfg.CAHash = s1.APIAddr(), tok.Token, tok.CaHash
		servers[id] = startServer(t, cfg)
		cfg.Join, cfg.Token, cfg.CAHash = "", "", ""
		configs[id] = cfg
	}
	healthOf := healthpb.NewHealthClient(conn)
	expect := func(want healthpb.HealthCheckResponse_ServingStatus) func() error {
		return func() error {
			resp, err := healthOf.Check(ctx, &healthpb.HealthCheckRequest{Service: client.ServingService})
			if err != nil {
				return err
			}
			if resp.Status != want {
				return fmt.Errorf("s1 is %s", resp.Status)
			}
			return nil
		}
	}
	testutil.Eventually(t, 30*time.Second, "three voters, s1 serving", func() error {
		resp, err := op.Members(ctx, &pb.MembersRequest{})
		if err != nil || len(resp.Members) != 3 {
			return fmt.Errorf("members: %v", err)
		}
		return expect(healthpb.HealthCheckResponse_SERVING)()
	})
	servers["s2"].Kill()
	servers["s3"].Kill()
	alone := time.Now()
	testutil.Eventually(t, 20*time.Second, "s1 alone not serving", expect(healthpb.HealthCheckResponse_NOT_SERVING))
	t.Logf("s1 left alone: not serving after %.1fs", time.Since(alone).Seconds())
	servers["s2"] = startServer(t, configs["s2"])
	testutil.Eventually(t, 30*time.Second, "s1 serving with s2 back", expect(healthpb.HealthCheckResponse_SERVING))
}
