package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/oneinfra/oneinfra/agent/addons"
	"github.com/oneinfra/oneinfra/agent/egress"
	"github.com/oneinfra/oneinfra/agent/join"
	"github.com/oneinfra/oneinfra/agent/vpn"
	"github.com/oneinfra/oneinfra/internal/renewal"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
)

// syncVPN runs a cluster's VPN endpoint on this (public) host and puts its
// public key and what it knows of its peers in the ingress's status.
func (a *Agent) syncVPN(as *pb.Assignment, status *pb.ComponentStatus) *pb.Condition {
	v, cluster := as.Vpn, as.Component.Spec.Cluster
	if a.hub == nil {
		return condition(vocab.CondVPNEndpoint, errors.New("this hypervisor is not public: it cannot run a VPN endpoint"), "")
	}
	key, err := a.hub.Ensure(vpn.Spec{
		Cluster: cluster, ListenPort: int(as.Component.Spec.Ports[vocab.PortWireGuard]),
		APIPort: int(as.Component.Spec.Ports[vocab.PortAPIServer]),
		CIDR:    v.Cidr, Address: v.EndpointAddress, Routes: v.Routes, Peers: v.Peers,
	})
	if err == nil {
		status.WireguardPublicKey = key
		if status.VpnPeers, err = a.hub.Peers(cluster); err != nil {
			err = fmt.Errorf("reading the peers of %s: %w", a.hub.InterfaceName(cluster), err)
		}
	}
	if err == nil {
		err = a.syncEgress(as)
	}
	return condition(vocab.CondVPNEndpoint, err, fmt.Sprintf("WireGuard endpoint %s up with %d peers, and the API servers' egress proxy at %s:%d",
		a.hub.InterfaceName(cluster), len(v.Peers), v.EndpointAddress, resources.EgressProxyPort))
}

// syncEgress runs, at the VPN endpoint's address, the proxy the cluster's
// API servers reach its nodes, pods and services through.
func (a *Agent) syncEgress(as *pb.Assignment) error {
	v := as.Vpn
	addr, err := netip.ParseAddr(v.EndpointAddress)
	if err != nil {
		return fmt.Errorf("the VPN endpoint address: %w", err)
	}
	var nets []netip.Prefix
	for _, r := range v.Routes {
		n, err := netip.ParsePrefix(r)
		if err != nil {
			return fmt.Errorf("the VPN's network %q: %w", r, err)
		}
		nets = append(nets, n)
	}
	kp := as.Certs[vocab.EgressProxyCert]
	if kp == nil {
		return errors.New("the ingress has no egress proxy certificate yet")
	}
	cert, err := tls.X509KeyPair(kp.CertPem, kp.KeyPem)
	if err != nil {
		return fmt.Errorf("the egress proxy certificate: %w", err)
	}
	clients, err := tlsutil.CertPool(as.CaCerts[vocab.KubeletClientCA])
	if err != nil {
		return fmt.Errorf("the kubelet-client CA: %w", err)
	}
	return a.egress.Ensure(as.Component.Spec.Cluster, egress.Config{Address: addr, Networks: nets, Cert: cert, ClientCAs: clients, ClientCN: vocab.APIServerKubeletClientUser})
}

// applyAddons applies, through the cluster's API at this ingress, the
// objects worker nodes need: their bootstrap tokens, the RBAC of TLS
// bootstrapping, kube-proxy and CoreDNS. Unchanged objects are applied
// again only now and then (addons.Applier).
func (a *Agent) applyAddons(ctx context.Context, as *pb.Assignment, address string) error {
	cluster := as.Component.Spec.Cluster
	kp := as.Certs[vocab.AddonsCert]
	if kp == nil {
		return errors.New("the ingress has no add-ons certificate (issued to ingresses placed from this version on)")
	}
	port := strconv.Itoa(int(as.Component.Spec.Ports[vocab.PortAPIServer]))
	dns, err := resources.DNSServiceIP(as.ClusterSpec.GetNetworking().GetServiceCidr())
	if err != nil {
		return err
	}
	in := addons.Inputs{
		Cluster:      cluster,
		APIServer:    "https://" + net.JoinHostPort(as.Vpn.EndpointAddress, strconv.Itoa(resources.TunnelAPIPort)),
		ClusterCAPEM: as.CaCerts[vocab.ClusterCA],
		PodCIDR:      as.ClusterSpec.GetNetworking().GetPodCidr(),
		ServiceCIDR:  as.ClusterSpec.GetNetworking().GetServiceCidr(),
		ClusterDNS:   dns.String(),
		DNSDomain:    vocab.DefaultDNSDomain,
		Images:       map[string]string{vocab.ImageKubeProxy: as.Images[vocab.ImageKubeProxy], vocab.ImageCoreDNS: as.Images[vocab.ImageCoreDNS]},
	}
	for _, p := range as.Vpn.Peers {
		in.BootstrapTokens = append(in.BootstrapTokens, addons.BootstrapToken{
			ID: p.BootstrapTokenId, Secret: p.BootstrapTokenSecret, Expires: p.BootstrapTokenExpires.AsTime(),
			Description: "kubelet bootstrap of node " + p.Name,
		})
	}
	cfg := &rest.Config{
		Host:    "https://" + net.JoinHostPort(address, port),
		Timeout: 20 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{
			CertData: kp.CertPem, KeyData: kp.KeyPem, CAData: as.CaCerts[vocab.ClusterCA],
			ServerName: vocab.APIServerName,
		},
	}
	applier := a.addons[cluster]
	if applier == nil {
		applier = &addons.Applier{}
		a.addons[cluster] = applier
	}
	applied, err := applier.Apply(ctx, cfg, in)
	if applied && err == nil {
		a.logger.Info("cluster add-ons applied", "cluster", cluster, "bootstrap-tokens", len(in.BootstrapTokens))
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) && apierrors.IsForbidden(status.(error)) {
		return fmt.Errorf("the add-ons' identity lacks its rights, which the control plane grants once its API server is up (see the control-plane agents' logs): %w", err)
	}
	return err
}

// serveJoin starts the worker join endpoint of a public hypervisor.
func (a *Agent) serveJoin(ctx context.Context) error {
	addr := a.cfg.JoinAddr
	if addr == "" {
		addr = ":" + strconv.Itoa(resources.DefaultJoinPort)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--join-addr: %w", err)
	}
	srv := &join.Server{Coordinator: a.api, Logger: a.logger}
	go func() {
		defer lis.Close()
		cert, err := a.joinCertificate(ctx)
		if err != nil {
			return // ctx ended
		}
		a.joinCert.Store(cert)
		a.logger.Info("worker join endpoint serving", "addr", lis.Addr().String())
		if err := join.Serve(ctx, lis, cert, a.id.trust, srv); err != nil {
			a.logger.Error("worker join endpoint stopped", "err", err)
		}
	}()
	return nil
}

// joinCertFiles are the join endpoint's certificate and key.
func (a *Agent) joinCertFiles() (certPath, keyPath string) {
	dir := filepath.Join(a.cfg.DataDir, "join-endpoint")
	return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
}

// joinCertificate returns the join endpoint's serving certificate, from
// DATA-DIR/join-endpoint or, the first time (or once expired), signed by
// the coordinator for a key made here, retrying until ctx ends. It is not
// the agent's own: a hypervisor's certificate serves nothing.
func (a *Agent) joinCertificate(ctx context.Context) (*tlsutil.Identity, error) {
	if kp, err := loadKeyPair(a.joinCertFiles()); err == nil {
		return tlsutil.NewIdentity(kp, a.id.trust)
	}
	for wait := time.Second; ; wait = min(2*wait, 15*time.Second) {
		kp, err := a.issueJoinCertificate(ctx)
		if err == nil {
			return tlsutil.NewIdentity(kp, a.id.trust)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		a.logger.Warn("getting the join endpoint's certificate; workers cannot join through here yet", "err", err, "retry", wait)
		sleep(ctx, wait)
	}
}

// issueJoinCertificate has the coordinator sign the join endpoint's
// certificate for a new key, and keeps both.
func (a *Agent) issueJoinCertificate(ctx context.Context) (*pb.KeyPair, error) {
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := tlsutil.CreateCSR(key, a.cfg.Name, nil)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := a.api.IssueJoinCertificate(cctx, &pb.IssueJoinCertificateRequest{Hypervisor: a.cfg.Name, CsrPem: csr})
	if err != nil {
		return nil, err
	}
	certPath, keyPath := a.joinCertFiles()
	if err := tlsutil.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := tlsutil.WriteFileAtomic(certPath, resp.CertPem, 0o644); err != nil {
		return nil, err
	}
	return &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}, nil
}

// renewJoinCertificate renews the join endpoint's certificate once it is
// due, or not of the CA that signs once serving certificates move;
// workers get the new one from their next handshake.
func (a *Agent) renewJoinCertificate(ctx context.Context) {
	cert := a.joinCert.Load()
	if cert == nil || (!renewal.Due(cert.Leaf(), time.Now()) && a.joinCertCurrent(cert.Leaf())) {
		return
	}
	kp, err := a.issueJoinCertificate(ctx)
	if err == nil {
		err = cert.Set(kp)
	}
	if err != nil {
		a.logger.Warn("renewing the join endpoint's certificate; trying again", "expires", cert.Leaf().NotAfter, "err", err)
		return
	}
	a.logger.Info("the join endpoint's certificate renewed", "expires", cert.Leaf().NotAfter)
}

// loadKeyPair reads a certificate and its key, and checks they match and
// the certificate has not expired.
func loadKeyPair(certPath, keyPath string) (*pb.KeyPair, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	kp := &pb.KeyPair{CertPem: certPEM, KeyPem: keyPEM}
	cert, _, err := tlsutil.ParseKeyPair(kp)
	if err != nil {
		return nil, err
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("%s expired at %s", certPath, cert.NotAfter)
	}
	return kp, nil
}
