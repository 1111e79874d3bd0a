package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// DefaultProbeTimeout bounds Probe when its context has no deadline.
const DefaultProbeTimeout = 10 * time.Second

// Probe checks the cluster's API the way its clients reach it: GET
// https://ADDRESS:PORT/readyz through the ingress's frontend (PORT is the
// assignment's apiserver port), with a new connection, trusting only the
// cluster CA and checking that the certificate is valid for address. It
// presents the ingress-health client certificate when the assignment has
// it. It returns nil when the answer is 200 "ok".
func Probe(ctx context.Context, as *pb.Assignment, address string) error {
	caPEM := as.GetCaCerts()[vocab.ClusterCA]
	if len(caPEM) == 0 {
		return fmt.Errorf("probing the API through the ingress: no %s CA certificate in the assignment", vocab.ClusterCA)
	}
	port := as.GetComponent().GetSpec().GetPorts()[vocab.PortAPIServer]
	if port == 0 {
		return fmt.Errorf("probing the API through the ingress: no %s port in the assignment", vocab.PortAPIServer)
	}
	tlsCfg, err := tlsutil.ClientConfig(as.GetCerts()[vocab.IngressHealthCert], caPEM, "")
	if err != nil {
		return fmt.Errorf("probing the API through the ingress: %w", err)
	}
	// kube-apiserver accepts TLS 1.2 unless told otherwise.
	tlsCfg.MinVersion = tls.VersionTLS12
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultProbeTimeout)
		defer cancel()
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	url := "https://" + net.JoinHostPort(address, strconv.Itoa(int(port))) + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("GET %s: the ingress closed the connection (is any API server behind it up?): %w", url, err)
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return fmt.Errorf("GET %s: reading the answer: %w", url, err)
	}
	text := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK || text != "ok" {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, oneLine(text, 300))
	}
	return nil
}

// oneLine joins the lines of s and cuts it at n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
