package agent

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/oneinfra/oneinfra/agent/addons"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"k8s.io/client-go/rest"
)

// Each control-plane replica of a VPN cluster acts in its cluster's API,
// through its own API server, with credentials it makes itself from the
// signing CA it holds (the API server trusts it for clients):
//
//   - it applies the add-ons' RBAC (addons.ApplyRBAC) as
//     vocab.ControlPlaneUser, a cluster admin: no other host holds
//     system:masters, and the public hypervisor applying the add-ons has
//     only the rights granted there;
//   - it reviews the kubelets' first client and serving certificate
//     requests (addons.ReviewNodeCSRs) as vocab.KubeletServingApproverUser,
//     which may do nothing else, against the nodes the coordinator joined.

// ownCertValidity is the lifetime of a replica's own certificates; a new
// one is made when less than ownCertRenew of it is left.
const (
	ownCertValidity = time.Hour
	ownCertRenew    = 20 * time.Minute
)

// replicaAPI is what one replica keeps to act in its cluster's API.
type replicaAPI struct {
	rbac     addons.Applier
	admin    ownCert
	approver ownCert
}

// ownCert is a client certificate of one identity that a replica makes
// itself from the signing CA.
type ownCert struct {
	cert    *pb.KeyPair
	expires time.Time
	// signer is the certificate of the CA it is of: a CA rotation
	// changes it, and the old one stops being trusted.
	signer []byte
}

// config is a client of the replica's own API server as user (in groups),
// with a certificate made now when the one it has runs out or is of
// another signing CA; fresh reports whether it was.
func (c *ownCert) config(as *pb.Assignment, user string, groups []string, now time.Time) (cfg *rest.Config, fresh bool, err error) {
	signer := as.Certs[vocab.SignerCACert]
	if signer == nil {
		return nil, false, errNoSigner
	}
	if c.cert == nil || c.expires.Sub(now) < ownCertRenew || !bytes.Equal(c.signer, signer.CertPem) {
		kp, err := tlsutil.Issue(signer, tlsutil.CertOptions{
			CommonName: user, Organizations: groups, Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: ownCertValidity,
		}, now)
		if err != nil {
			return nil, false, err
		}
		c.cert, c.expires, c.signer, fresh = kp, now.Add(ownCertValidity), signer.CertPem, true
	}
	return &rest.Config{
		Host:    "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(as.Component.Spec.Ports[vocab.PortAPIServer]))),
		Timeout: 20 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{
			CertData: c.cert.CertPem, KeyData: c.cert.KeyPem, CAData: as.CaCerts[vocab.ClusterCA], ServerName: vocab.APIServerName,
		},
	}, fresh, nil
}

var errNoSigner = errors.New("the assignment has no signing CA")

// api is the replica's state for acting in its cluster's API.
func (d *controlPlaneDriver) api(name string) *replicaAPI {
	r := d.apis[name]
	if r == nil {
		r = &replicaAPI{}
		d.apis[name] = r
	}
	return r
}

// actInClusterAPI applies the add-ons' RBAC now and then
// (addons.Applier) and reviews the pending kubelet serving CSRs, logging
// failures: the add-ons' own condition, on the ingress, tells what they
// cause.
func (d *controlPlaneDriver) actInClusterAPI(ctx context.Context, as *pb.Assignment) {
	name := as.Component.Metadata.Name
	r := d.api(name)
	now := time.Now()
	cfg, fresh, err := r.admin.config(as, vocab.ControlPlaneUser, []string{vocab.MastersGroup}, now)
	if err != nil {
		d.a.logger.Warn("applying the add-ons' RBAC: making credentials", "component", name, "err", err)
		return
	}
	if fresh {
		r.rbac.Reset()
	}
	applied, err := r.rbac.ApplyRBAC(ctx, cfg)
	switch {
	case err != nil:
		d.a.logger.Warn("applying the add-ons' RBAC", "component", name, "err", err)
	case applied:
		d.a.logger.Info("the add-ons' RBAC applied", "component", name, "cluster", as.Component.Spec.Cluster)
	}
	if cfg, _, err = r.approver.config(as, vocab.KubeletServingApproverUser, nil, now); err != nil {
		d.a.logger.Warn("reviewing kubelet serving CSRs: making credentials", "component", name, "err", err)
		return
	}
	decided, err := addons.ReviewNodeCSRs(ctx, cfg, vpnNodes(as))
	for csr, why := range decided {
		if why == "" {
			d.a.logger.Info("approved a kubelet CSR", "component", name, "csr", csr)
		} else {
			d.a.logger.Warn("denied a kubelet CSR", "component", name, "csr", csr, "why", why)
		}
	}
	if err != nil {
		d.a.logger.Warn("reviewing kubelet CSRs", "component", name, "err", err)
	}
}

// vpnNodes are the nodes joined to the assignment's cluster.
func vpnNodes(as *pb.Assignment) map[string]addons.Node {
	nodes := map[string]addons.Node{}
	for _, p := range as.GetVpn().GetPeers() {
		if addr, err := netip.ParseAddr(p.Address); err == nil {
			nodes[p.Name] = addons.Node{Address: addr, BootstrapTokenID: p.BootstrapTokenId}
		}
	}
	return nodes
}
