package worker

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/protobuf/encoding/protojson"
)

// state is what a join leaves in the data directory. worker.json is
// written last: its presence means the worker has joined.
type state struct {
	config *pb.WorkerConfig
	cert   *pb.KeyPair // the worker's client certificate, for Join.Config
	caPEM  []byte      // the coordinator's CAs: the pinned one at join, then what configurations say
	// trustAt is the cluster trust generation the kubelet holds (see
	// syncTrust), told at each configuration request; trustTold the one
	// last told. coordAt and coordTold are the same for the coordinator's
	// (syncCoordinatorTrust).
	trustAt, trustTold uint64
	coordAt, coordTold uint64
}

const (
	configFile = "worker.json"
	tlsKeyFile = "tls/worker.key"
	tlsCrtFile = "tls/worker.crt"
	tlsCAFile  = "tls/ca.crt"
)

// loadState reads the saved state; nil without error when the worker has
// not joined yet.
func loadState(c Config) (*state, error) {
	b, err := os.ReadFile(c.path(configFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	wc := &pb.WorkerConfig{}
	if err := protojson.Unmarshal(b, wc); err != nil {
		return nil, fmt.Errorf("%s: %w", c.path(configFile), err)
	}
	key, err1 := os.ReadFile(c.path(tlsKeyFile))
	crt, err2 := os.ReadFile(c.path(tlsCrtFile))
	ca, err3 := os.ReadFile(c.path(tlsCAFile))
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("joined (%s exists) but the TLS identity is incomplete: %w", c.path(configFile), err)
	}
	return &state{config: wc, cert: &pb.KeyPair{CertPem: crt, KeyPem: key}, caPEM: ca}, nil
}

// save writes the identity, then the configuration.
func (s *state) save(c Config) error {
	if err := tlsutil.WriteFileAtomic(c.path(tlsKeyFile), s.cert.KeyPem, 0o600); err != nil {
		return err
	}
	if err := tlsutil.WriteFileAtomic(c.path(tlsCrtFile), s.cert.CertPem, 0o644); err != nil {
		return err
	}
	if err := tlsutil.WriteFileAtomic(c.path(tlsCAFile), s.caPEM, 0o644); err != nil {
		return err
	}
	return saveConfig(c, s.config)
}

// saveConfig writes worker.json (0600: it holds the bootstrap token).
func saveConfig(c Config, wc *pb.WorkerConfig) error {
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(wc)
	if err != nil {
		return err
	}
	return tlsutil.WriteFileAtomic(c.path(configFile), append(b, '\n'), 0o600)
}

// checkConfig checks that a WorkerConfig has what the worker needs.
func checkConfig(wc *pb.WorkerConfig) error {
	var errs []error
	bad := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
	}
	missing := errors.New("missing")
	nonEmpty := func(s string) error {
		if s == "" {
			return missing
		}
		return nil
	}
	cidr := func(s string) error { _, _, err := net.ParseCIDR(s); return err }
	bad("address", cidr(wc.GetAddress()))
	bad("pod_cidr", cidr(wc.GetPodCidr()))
	bad("cluster_pod_cidr", cidr(wc.GetClusterPodCidr()))
	if net.ParseIP(wc.GetClusterDns()) == nil {
		bad("cluster_dns", fmt.Errorf("%q is not an IP address", wc.GetClusterDns()))
	}
	_, err := wgtypes.ParseKey(wc.GetEndpointPublicKey())
	bad("endpoint_public_key", err)
	_, _, err = net.SplitHostPort(wc.GetEndpoint())
	bad("endpoint", err)
	if len(wc.GetAllowedIps()) == 0 {
		bad("allowed_ips", missing)
	}
	for _, a := range wc.GetAllowedIps() {
		bad("allowed_ips", cidr(a))
	}
	bad("api_server", nonEmpty(wc.GetApiServer()))
	if len(wc.GetClusterCaPem()) == 0 {
		bad("cluster_ca_pem", missing)
	}
	if len(wc.GetKubeletClientCaPem()) == 0 {
		bad("kubelet_client_ca_pem", missing)
	}
	return errors.Join(errs...)
}
