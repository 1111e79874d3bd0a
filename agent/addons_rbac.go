package agent

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/oneinfra/oneinfra/agent/addons"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"k8s.io/client-go/rest"
)

// The add-ons' RBAC (addons.ApplyRBAC) is applied by each control-plane
// replica of a VPN cluster through its own API server, as a cluster admin
// whose certificate the replica makes itself from the signing CA it holds
// (the API server trusts it for clients): no other host holds
// system:masters, and the public hypervisor applying the add-ons has only
// the rights granted here.

// rbacCertValidity is the lifetime of the replica's own admin certificate;
// a new one is made when less than rbacCertRenew of it is left.
const (
	rbacCertValidity = time.Hour
	rbacCertRenew    = 20 * time.Minute
)

// addonsRBAC is one replica's RBAC applier and its credentials.
type addonsRBAC struct {
	applier addons.Applier
	cert    *pb.KeyPair
	expires time.Time
}

// applyAddonsRBAC applies the cluster's add-ons RBAC through this
// replica's API server, now and then (addons.Applier), logging failures:
// the add-ons' own condition, on the ingress, tells what they cause.
func (d *controlPlaneDriver) applyAddonsRBAC(ctx context.Context, as *pb.Assignment) {
	name := as.Component.Metadata.Name
	r := d.rbac[name]
	if r == nil {
		r = &addonsRBAC{}
		d.rbac[name] = r
	}
	now := time.Now()
	if r.cert == nil || r.expires.Sub(now) < rbacCertRenew {
		signer := as.Certs[vocab.SignerCACert]
		if signer == nil {
			d.a.logger.Warn("applying the add-ons' RBAC: the assignment has no signing CA", "component", name)
			return
		}
		kp, err := tlsutil.Issue(signer, tlsutil.CertOptions{
			CommonName: "oneinfra:control-plane", Organizations: []string{vocab.MastersGroup},
			Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: rbacCertValidity,
		}, now)
		if err != nil {
			d.a.logger.Warn("applying the add-ons' RBAC: making credentials", "component", name, "err", err)
			return
		}
		r.cert, r.expires = kp, now.Add(rbacCertValidity)
		r.applier.Reset()
	}
	cfg := &rest.Config{
		Host:    "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(as.Component.Spec.Ports[vocab.PortAPIServer]))),
		Timeout: 20 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{
			CertData: r.cert.CertPem, KeyData: r.cert.KeyPem, CAData: as.CaCerts[vocab.ClusterCA], ServerName: vocab.APIServerName,
		},
	}
	applied, err := r.applier.ApplyRBAC(ctx, cfg)
	switch {
	case err != nil:
		d.a.logger.Warn("applying the add-ons' RBAC", "component", name, "err", err)
	case applied:
		d.a.logger.Info("the add-ons' RBAC applied", "component", name, "cluster", as.Component.Spec.Cluster)
	}
}
