// Package pki owns the secret material of each Kubernetes cluster that
// oneinfra runs: its certificate authorities, service-account key and
// encryption-at-rest key (a pb.ClusterPKI made once, when the cluster is
// created, and kept in the replicated state), and the leaf certificates
// issued from them to control-plane and ingress components and to the
// admin kubeconfig.
//
// The coordinator calls these functions in its request handlers, with the
// time of the request, never inside the Raft FSM: the results are random
// and go into the log as data.
//
// # Certificate authorities
//
// Each cluster has one CA per trust relationship, so that a certificate
// can be used only where it is meant to be:
//
//   - vocab.ClusterCA signs the API server serving certificates. It is the CA in
//     kubeconfigs and the one haproxy verifies API servers against.
//   - vocab.ClientCA signs the client certificates of the admin, the
//     controller-manager, the scheduler and the ingress health check.
//   - vocab.SignerCA is the controller-manager's --cluster-signing-cert-file and
//     key: node client certificates (Kubernetes TLS bootstrap) come from
//     it. The API server's --client-ca-file is therefore the bundle of
//     vocab.ClientCA and vocab.SignerCA (APIServerClientCABundle).
//   - vocab.KubeletClientCA signs the API server's kubelet client certificate;
//     kubelets trust it with their --client-ca-file.
//   - vocab.EtcdServerCA, vocab.EtcdPeerCA and vocab.EtcdClientCA sign etcd's serving,
//     peer and client (API server) certificates.
//   - vocab.FrontProxyCA signs the API server's front-proxy (aggregation layer)
//     client certificate; it is --requestheader-client-ca-file.
//
// Only the admin kubeconfig certificate (AdminKubeconfigCert) is in the
// system:masters group. The API server's kubelet client certificate is the
// user "kube-apiserver-kubelet-client" with no group; the cluster setup
// grants that user the system:kubelet-api-admin ClusterRole.
package pki

import (
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/oneinfra/oneinfra/internal/backup"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// Validities of the certificates made here.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	LeafValidity = 365 * 24 * time.Hour
)

// EncryptionKeySize is the size in bytes of the encryption-at-rest key
// (AES-256 or secretbox).
const EncryptionKeySize = 32

// ErrMissingCA is returned when a ClusterPKI lacks a certificate authority.
var ErrMissingCA = errors.New("certificate authority missing from cluster PKI")

// CANames returns the names of every CA of a cluster, in a fixed order.
func CANames() []string {
	return []string{
		vocab.ClusterCA, vocab.ClientCA, vocab.SignerCA, vocab.KubeletClientCA,
		vocab.EtcdServerCA, vocab.EtcdPeerCA, vocab.EtcdClientCA, vocab.FrontProxyCA,
	}
}

// NewClusterPKI makes the PKI of a new cluster: every CA (valid for
// CAValidity from now), an ECDSA P-256 service-account signing key and a
// random encryption-at-rest key.
func NewClusterPKI(cluster string, now time.Time) (*pb.ClusterPKI, error) {
	if cluster == "" {
		return nil, errors.New("cluster name is required")
	}
	p := &pb.ClusterPKI{Cluster: cluster, Cas: make(map[string]*pb.KeyPair)}
	for _, name := range CANames() {
		ca, err := tlsutil.NewCA(fmt.Sprintf("oneinfra-%s-%s-ca", cluster, name), CAValidity, now)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %s CA: %w", cluster, name, err)
		}
		p.Cas[name] = ca
	}
	_, saKey, err := tlsutil.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("cluster %s: service-account key: %w", cluster, err)
	}
	p.ServiceAccountKeyPem = saKey
	p.EncryptionKey = make([]byte, EncryptionKeySize)
	if _, err := rand.Read(p.EncryptionKey); err != nil {
		return nil, fmt.Errorf("cluster %s: encryption key: %w", cluster, err)
	}
	if p.BackupKey, err = NewBackupKey(); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cluster, err)
	}
	return p, nil
}

// CA returns the named certificate authority of p.
func CA(p *pb.ClusterPKI, name string) (*pb.KeyPair, error) {
	ca := p.GetCas()[name]
	if ca == nil || len(ca.GetCertPem()) == 0 || len(ca.GetKeyPem()) == 0 {
		return nil, fmt.Errorf("cluster %s: %s: %w", p.GetCluster(), name, ErrMissingCA)
	}
	return ca, nil
}

// CACertPEM returns the certificate (public part only) of the named CA.
func CACertPEM(p *pb.ClusterPKI, name string) ([]byte, error) {
	ca, err := CA(p, name)
	if err != nil {
		return nil, err
	}
	return ca.GetCertPem(), nil
}

// APIServerClientCABundle returns the API server's --client-ca-file: the
// certificates of vocab.ClientCA and vocab.SignerCA, so that both control-plane
// clients and bootstrapped nodes are trusted.
func APIServerClientCABundle(p *pb.ClusterPKI) ([]byte, error) {
	var bundle []byte
	for _, name := range []string{vocab.ClientCA, vocab.SignerCA} {
		pem, err := CACertPEM(p, name)
		if err != nil {
			return nil, err
		}
		bundle = append(bundle, pem...)
	}
	return bundle, nil
}

// ServiceAccountPublicKeyPEM returns the PEM public key of the cluster's
// service-account signing key (the API server's --service-account-key-file).
func ServiceAccountPublicKeyPEM(p *pb.ClusterPKI) ([]byte, error) {
	key, err := tlsutil.ParseKeyPEM(p.GetServiceAccountKeyPem())
	if err != nil {
		return nil, fmt.Errorf("cluster %s: service-account key: %w", p.GetCluster(), err)
	}
	return tlsutil.EncodePublicKey(key.Public())
}

// NewBackupKey makes a key that seals a cluster's etcd backups.
func NewBackupKey() ([]byte, error) {
	key := make([]byte, backup.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("backup key: %w", err)
	}
	return key, nil
}
