package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// APIServerReady checks that this replica's API server answers /readyz
// (anonymous requests may read it), verifying its certificate against the
// cluster CA for the name every API server certificate carries. A replica
// whose API server is not ready yet must not count as running: the
// coordinator removes the one it replaces only then.
func APIServerReady(ctx context.Context, as *pb.Assignment) error {
	m, err := self(as)
	if err != nil {
		return err
	}
	pool, err := tlsutil.CertPool(as.CaCerts[vocab.ClusterCA])
	if err != nil {
		return fmt.Errorf("cluster CA: %w", err)
	}
	client := &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: vocab.APIServerName, MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url(m.address, m.ports[vocab.PortAPIServer])+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("kube-apiserver /readyz: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("kube-apiserver /readyz: %s: %s", resp.Status, failedChecks(string(body)))
	}
	return nil
}

// failedChecks keeps the failing lines of a /readyz answer ("[-]etcd
// failed: ...").
func failedChecks(body string) string {
	var failed []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "[-]") {
			failed = append(failed, strings.TrimPrefix(line, "[-]"))
		}
	}
	if len(failed) == 0 {
		return strings.TrimSpace(body)
	}
	return strings.Join(failed, "; ")
}
