package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// callTimeout bounds one call to a join endpoint.
const callTimeout = 15 * time.Second

// dial makes a gRPC connection to one join endpoint. Connections are made
// per attempt, so that a retry dials afresh instead of waiting out gRPC's
// own reconnection back-off.
// Only a join endpoint's certificate is accepted: the coordinator CA
// signs other roles too (a hypervisor's, a server's).
func dial(endpoint string, conf *tls.Config) (*grpc.ClientConn, error) {
	conf = conf.Clone()
	conf.VerifyConnection = joinEndpointRole
	return grpc.NewClient("passthrough:///"+endpoint, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
}

// joinEndpointRole checks that a server is a join endpoint.
var joinEndpointRole = tlsutil.PeerRole(vocab.RoleJoinEndpoint, vocab.Roles)

// pinnedConfig is tlsutil.PinnedClientConfig that also keeps the outcome
// of the last verification: the pinned CA on success (to trust from then
// on) or why the server was refused.
type pinnedConfig struct {
	conf *tls.Config
	mu   sync.Mutex
	ca   *x509.Certificate
	err  error
}

func newPinnedConfig(caHash, host string) *pinnedConfig {
	p := &pinnedConfig{conf: tlsutil.PinnedClientConfig(caHash, host)}
	verify := p.conf.VerifyPeerCertificate
	p.conf.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verify(raw, chains)
		var ca *x509.Certificate
		if err == nil {
			ca, err = tlsutil.PinnedCA(caHash, raw)
		}
		if err == nil {
			// Recorded with the pin, so that an impostor is a final
			// refusal, not a join endpoint to wait for.
			leaf, perr := x509.ParseCertificate(raw[0])
			if err = perr; err == nil {
				err = joinEndpointRole(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
			}
		}
		p.mu.Lock()
		p.ca, p.err = ca, err
		p.mu.Unlock()
		return err
	}
	return p
}

func (p *pinnedConfig) result() (*x509.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ca, p.err
}

// retryable says whether a join failure may pass: the endpoint is not
// up or not ready yet. Refusals (a bad, expired, revoked or foreign
// token, a taken name) are final.
func retryable(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.FailedPrecondition, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// join trades the token for the worker's configuration and client
// certificate, retrying while the endpoint is not ready.
func join(ctx context.Context, c Config, wgKey wgtypes.Key) (*state, error) {
	if c.Token == "" || c.CAHash == "" {
		return nil, errors.New("this worker has not joined yet: the first start needs --token and --ca-hash (oneinfra-coord token create --kind worker --cluster NAME)")
	}
	host, _, _ := net.SplitHostPort(c.Join)
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := tlsutil.CreateCSR(key, c.Name, nil)
	if err != nil {
		return nil, err
	}
	req := &pb.JoinWorkerRequest{Token: c.Token, Name: c.Name, PublicKey: wgKey.PublicKey().String(), CsrPem: csr}
	wait := c.JoinBackoff
	for attempt := 1; ; attempt++ {
		pin := newPinnedConfig(c.CAHash, host)
		wc, err := joinOnce(ctx, c.Join, pin.conf, req)
		if err == nil {
			ca, _ := pin.result()
			if ca == nil {
				return nil, errors.New("joined, but the pinned CA was not seen in the handshake")
			}
			if err := checkConfig(wc); err != nil {
				return nil, fmt.Errorf("the join endpoint %s answered an unusable configuration: %w", c.Join, err)
			}
			cert := &pb.KeyPair{CertPem: wc.GetCertPem(), KeyPem: keyPEM}
			if _, _, err := tlsutil.ParseKeyPair(cert); err != nil {
				return nil, fmt.Errorf("the join endpoint %s answered a bad client certificate: %w", c.Join, err)
			}
			if wc.GetBootstrapToken() == "" {
				return nil, fmt.Errorf("the join endpoint %s answered no bootstrap token", c.Join)
			}
			// The coordinator's CAs (more than one during a rotation),
			// from the endpoint the pin verified, if they hold the pinned one.
			caPEM := tlsutil.EncodeCertPEM(ca)
			if t := wc.GetCoordinatorTrust(); t != nil && tlsutil.BundleHasCA(t.CaPem, c.CAHash) == nil {
				caPEM = t.CaPem
			}
			return &state{config: merge(nil, wc), cert: cert, caPEM: caPEM}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if _, pinErr := pin.result(); pinErr != nil {
			return nil, fmt.Errorf("the join endpoint %s is not trusted (check --ca-hash and --join): %v", c.Join, pinErr)
		}
		st := status.Convert(err)
		if !retryable(st.Code()) {
			return nil, fmt.Errorf("join refused by %s: %s (%s)", c.Join, st.Message(), st.Code())
		}
		c.Logger.Warn("join endpoint not ready, retrying", "endpoint", c.Join, "attempt", attempt,
			"code", st.Code().String(), "reason", st.Message(), "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, c.JoinMaxBackoff)
	}
}

func joinOnce(ctx context.Context, endpoint string, conf *tls.Config, req *pb.JoinWorkerRequest) (*pb.WorkerConfig, error) {
	conn, err := dial(endpoint, conf)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return pb.NewJoinClient(conn).Join(cctx, req)
}

// fetchConfig asks the join endpoints, --join first, for the worker's
// current configuration, with its client certificate.
func fetchConfig(ctx context.Context, c Config, st *state) (*pb.WorkerConfig, string, error) {
	endpoints := []string{c.Join}
	for _, e := range st.config.GetJoinEndpoints() {
		if e != "" && !slices.Contains(endpoints, e) {
			endpoints = append(endpoints, e)
		}
	}
	var errs []error
	for _, e := range endpoints {
		host, _, err := net.SplitHostPort(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e, err))
			continue
		}
		conf, err := tlsutil.ClientConfig(st.cert, st.caPEM, host)
		if err != nil {
			return nil, "", err
		}
		wc, err := configOnce(ctx, e, conf, &pb.GetWorkerConfigRequest{TrustGeneration: st.trustAt, CoordinatorTrustGeneration: st.coordAt})
		if err == nil {
			if err := checkConfig(wc); err != nil {
				errs = append(errs, fmt.Errorf("%s answered an unusable configuration: %w", e, err))
				continue
			}
			return wc, e, nil
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %s", e, status.Convert(err).Message()))
	}
	return nil, "", errors.Join(errs...)
}

func configOnce(ctx context.Context, endpoint string, conf *tls.Config, req *pb.GetWorkerConfigRequest) (*pb.WorkerConfig, error) {
	conn, err := dial(endpoint, conf)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return pb.NewJoinClient(conn).Config(cctx, req)
}

// renewCertificate renews the worker's client certificate through the
// join endpoint that just answered, for a key made here, and keeps it; a
// failure is tried again at the next refresh.
func (w *Worker) renewCertificate(ctx context.Context, endpoint string) {
	next, err := renewed(ctx, w.cfg, w.state, endpoint)
	if err == nil {
		err = next.save(w.cfg)
	}
	if err != nil {
		w.logger.Warn("renewing the worker's certificate; trying again at the next refresh", "err", err)
		return
	}
	w.state = next
	w.logger.Info("the worker's certificate renewed", "through", endpoint)
}

// renewed is st with a renewed certificate, for a new key.
func renewed(ctx context.Context, c Config, st *state, endpoint string) (*state, error) {
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := tlsutil.CreateCSR(key, c.Name, nil)
	if err != nil {
		return nil, err
	}
	resp, err := renewOnce(ctx, endpoint, st, csr)
	if err != nil {
		return nil, err
	}
	next := *st
	next.cert = &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}
	if len(resp.CaPem) > 0 {
		next.caPEM = resp.CaPem
	}
	return &next, nil
}

func renewOnce(ctx context.Context, endpoint string, st *state, csr []byte) (*pb.RenewCertificateResponse, error) {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return nil, err
	}
	conf, err := tlsutil.ClientConfig(st.cert, st.caPEM, host)
	if err != nil {
		return nil, err
	}
	conn, err := dial(endpoint, conf)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return pb.NewJoinClient(conn).RenewCertificate(cctx, &pb.RenewCertificateRequest{CsrPem: csr})
}
