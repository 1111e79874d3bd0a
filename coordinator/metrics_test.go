package coordinator

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

func TestMetricsEndpoints(t *testing.T) {
	cfg := testConfig(t, "s1", t.TempDir())
	cfg.Bootstrap, cfg.MetricsAddr = true, freePort(t)
	s := startServer(t, cfg)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + cfg.MetricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	testutil.Eventually(t, 20*time.Second, "/readyz", func() error {
		if code, body := get("/readyz"); code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	if err := createCluster(context.Background(), op, "demo"); err != nil {
		t.Fatal(err)
	}
	_, body := get("/metrics")
	for _, want := range []string{
		`oneinfra_coordinator_raft_state{state="Leader"} 1`,
		`oneinfra_coordinator_raft_apply_seconds_count`,
		`oneinfra_coordinator_assignment_watchers 0`,
		`oneinfra_coordinator_clusters{phase=`,
		`oneinfra_coordinator_grpc_requests_total{code="OK",method="/oneinfra.v1.Operator/Apply"} 1`,
		`oneinfra_certificate_expiry_timestamp_seconds{certificate="ca",owner="coordinator"}`,
		`oneinfra_certificate_expiry_timestamp_seconds{certificate="cluster",owner="cluster/demo"}`,
		`oneinfra_certificate_expiry_timestamp_seconds{certificate="server",owner="server/s1"}`,
		`oneinfra_certificate_expiry_timestamp_seconds{certificate="admin",owner="admin/admin"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
