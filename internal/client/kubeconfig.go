package client

import (
	"context"

	"github.com/oneinfra/oneinfra/internal/kubeconfig"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// AdminKubeconfig gets an admin kubeconfig of a cluster whose certificate
// lives ttlSeconds (0: as long as the coordinator gives), for a key made
// here that never leaves this machine: the coordinator signs a request of
// it.
func AdminKubeconfig(ctx context.Context, op pb.OperatorClient, cluster string, ttlSeconds uint32) ([]byte, error) {
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := tlsutil.CreateCSR(key, vocab.AdminUser, nil)
	if err != nil {
		return nil, err
	}
	resp, err := op.Kubeconfig(ctx, &pb.KubeconfigRequest{Name: cluster, TtlSeconds: ttlSeconds, CsrPem: csr})
	if err != nil {
		return nil, err
	}
	return kubeconfig.WithCert(cluster, resp.Server, resp.CaPem, &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}, "admin")
}
