package pki

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// ControlPlaneIdentity is what the certificates of one control-plane
// component (API server, etcd, controller-manager and scheduler of one
// replica) are issued for.
type ControlPlaneIdentity struct {
	// Component is the component's name; etcd's certificates carry it as CN.
	Component string
	// HypervisorAddresses are the addresses (IPs or DNS names) of the
	// hypervisor running the component, where the ingress and the etcd
	// peers reach it. At least one is required.
	HypervisorAddresses []string
	// IngressAddresses are the public addresses of the cluster's ingress.
	IngressAddresses []string
	// APIServerHost is the host of the cluster's API server endpoint. A
	// URL or a host:port is accepted; only the host is used.
	APIServerHost string
	// ExtraSANs are the cluster's spec.apiServer.extraSANs (IPs or DNS
	// names).
	ExtraSANs []string
	// ServiceCIDR is the cluster's service network; its first address is
	// the kubernetes service IP. Required.
	ServiceCIDR string
	// DNSDomain is the cluster DNS domain; vocab.DefaultDNSDomain when empty.
	DNSDomain string
	// Validity is how long the certificates live; LeafValidity when zero.
	Validity time.Duration
}

// ErrNoKeys: a component's agent has not given the keys of its next
// certificates yet (SubmitKeys); nothing is issued until it does.
var ErrNoKeys = errors.New("waiting for its agent's new keys")

// keyNames are the certificates of each role's components, each issued
// for a key the component's agent makes.
var keyNames = map[string][]string{
	resources.RoleControlPlane: {vocab.APIServerCert, vocab.APIServerKubeletClientCert, vocab.APIServerEtcdClientCert,
		vocab.EtcdServerCert, vocab.EtcdPeerCert, vocab.FrontProxyClientCert, vocab.ControllerManagerCert, vocab.SchedulerCert},
	resources.RoleIngress: {vocab.IngressHealthCert, vocab.AddonsCert, vocab.EgressProxyCert},
}

// KeyNames are the certificates a component of role holds, whose keys its
// agent makes: those ControlPlaneCerts or IngressCerts issue.
func KeyNames(role string) []string { return keyNames[role] }

// ControlPlaneCerts issues every leaf certificate of one control-plane
// component, valid for id.Validity (LeafValidity when zero) from now, each
// for the public key (PKIX DER) of keys under its name:
//
//   - vocab.APIServerCert: serving, CN kube-apiserver, names kubernetes,
//     kubernetes.default, kubernetes.default.svc,
//     kubernetes.default.svc.DOMAIN, localhost, 127.0.0.1, the kubernetes
//     service IP, the hypervisor and ingress addresses, the API server
//     endpoint host and the extra SANs.
//   - vocab.APIServerKubeletClientCert: client, CN kube-apiserver-kubelet-client.
//   - vocab.APIServerEtcdClientCert: client, CN kube-apiserver-etcd-client.
//   - vocab.EtcdServerCert: server and client (etcd's gRPC gateway dials etcd
//     itself with it), CN the component, names the hypervisor addresses,
//     localhost and 127.0.0.1.
//   - vocab.EtcdPeerCert: server and client, CN the component, names the
//     hypervisor addresses.
//   - vocab.FrontProxyClientCert: client, CN front-proxy-client.
//   - vocab.ControllerManagerCert: client, CN system:kube-controller-manager.
//   - vocab.SchedulerCert: client, CN system:kube-scheduler.
//
// None of them is in a group, and none has a private key: its agent holds
// it. A key missing from keys is ErrNoKeys.
func ControlPlaneCerts(p *pb.ClusterPKI, id ControlPlaneIdentity, keys map[string][]byte, now time.Time) (*pb.ComponentCerts, error) {
	specs, err := controlPlaneSpecs(p, id)
	if err != nil {
		return nil, err
	}
	certs, err := issueAll(p, specs, keys, id.Validity, now)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: component %s: %w", p.GetCluster(), id.Component, err)
	}
	return withTrust(p, id.Component, certs), nil
}

// APIServerServingCert issues the API server serving certificate of a
// control-plane component again (as ControlPlaneCerts does) for the key
// of the one it has, pubDER: for names it now needs.
func APIServerServingCert(p *pb.ClusterPKI, id ControlPlaneIdentity, pubDER []byte, now time.Time) (*pb.KeyPair, error) {
	specs, err := controlPlaneSpecs(p, id)
	if err != nil {
		return nil, err
	}
	certs, err := issueAll(p, specs[:1], map[string][]byte{vocab.APIServerCert: pubDER}, id.Validity, now)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: component %s: %w", p.GetCluster(), id.Component, err)
	}
	return certs[vocab.APIServerCert], nil
}

// controlPlaneSpecs are the certificates of ControlPlaneCerts, the API
// server's first.
func controlPlaneSpecs(p *pb.ClusterPKI, id ControlPlaneIdentity) ([]leafSpec, error) {
	if id.Component == "" {
		return nil, errors.New("component name is required")
	}
	fail := func(err error) ([]leafSpec, error) {
		return nil, fmt.Errorf("cluster %s: component %s: %w", p.GetCluster(), id.Component, err)
	}
	if len(id.HypervisorAddresses) == 0 {
		return fail(errors.New("a hypervisor address is required"))
	}
	serviceIP, err := resources.ServiceIP(id.ServiceCIDR)
	if err != nil {
		return fail(err)
	}
	domain := id.DNSDomain
	if domain == "" {
		domain = vocab.DefaultDNSDomain
	}

	api := &sanSet{}
	api.add(vocab.APIServerName, "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc."+domain, "localhost", "127.0.0.1")
	api.addIP(serviceIP)
	api.add(id.HypervisorAddresses...)
	api.add(id.IngressAddresses...)
	if id.APIServerHost != "" {
		api.add(hostOf(id.APIServerHost))
	}
	api.add(id.ExtraSANs...)

	etcdServer := &sanSet{}
	etcdServer.add(id.HypervisorAddresses...)
	etcdServer.add("localhost", "127.0.0.1")

	etcdPeer := &sanSet{}
	etcdPeer.add(id.HypervisorAddresses...)

	for _, s := range []*sanSet{api, etcdServer, etcdPeer} {
		if s.err != nil {
			return fail(s.err)
		}
	}

	server := []tlsutil.Usage{tlsutil.UsageServer}
	client := []tlsutil.Usage{tlsutil.UsageClient}
	both := []tlsutil.Usage{tlsutil.UsageServer, tlsutil.UsageClient}
	return []leafSpec{
		{vocab.APIServerCert, vocab.ClusterCA, tlsutil.CertOptions{CommonName: vocab.APIServerUser, DNSNames: api.dns, IPs: api.ips, Usages: server}},
		{vocab.APIServerKubeletClientCert, vocab.KubeletClientCA, tlsutil.CertOptions{CommonName: vocab.APIServerKubeletClientUser, Usages: client}},
		{vocab.APIServerEtcdClientCert, vocab.EtcdClientCA, tlsutil.CertOptions{CommonName: vocab.APIServerEtcdClientUser, Usages: client}},
		{vocab.EtcdServerCert, vocab.EtcdServerCA, tlsutil.CertOptions{CommonName: id.Component, DNSNames: etcdServer.dns, IPs: etcdServer.ips, Usages: both}},
		{vocab.EtcdPeerCert, vocab.EtcdPeerCA, tlsutil.CertOptions{CommonName: id.Component, DNSNames: etcdPeer.dns, IPs: etcdPeer.ips, Usages: both}},
		{vocab.FrontProxyClientCert, vocab.FrontProxyCA, tlsutil.CertOptions{CommonName: vocab.FrontProxyClientUser, Usages: client}},
		{vocab.ControllerManagerCert, vocab.ClientCA, tlsutil.CertOptions{CommonName: vocab.ControllerManagerUser, Usages: client}},
		{vocab.SchedulerCert, vocab.ClientCA, tlsutil.CertOptions{CommonName: vocab.SchedulerUser, Usages: client}},
	}, nil
}

// IngressCerts issues the certificates of a cluster's ingress component,
// each for the public key of keys under its name (ErrNoKeys if one is
// missing):
//
//   - vocab.IngressHealthCert, a client certificate from vocab.ClientCA
//     with CN oneinfra:ingress-health and no group, which haproxy presents
//     when it checks the API servers' /readyz (readable by any
//     authenticated user). To verify the API servers, haproxy needs only
//     the public certificate of vocab.ClusterCA (CACertPEM).
//   - vocab.AddonsCert (CN oneinfra:addons, no group), with which the agent
//     applies the objects worker nodes need (bootstrap tokens, kube-proxy,
//     CoreDNS): a control-plane replica grants it exactly the rights that
//     takes (agent/addons), never system:masters.
//   - vocab.EgressProxyCert: serving, from vocab.ClusterCA, CN
//     oneinfra:egress-proxy, for vpnAddresses (the VPN endpoint's; none
//     without a VPN): the API servers verify the egress proxy with it.
func IngressCerts(p *pb.ClusterPKI, component string, vpnAddresses []string, keys map[string][]byte, validity time.Duration, now time.Time) (*pb.ComponentCerts, error) {
	if component == "" {
		return nil, errors.New("component name is required")
	}
	egress := &sanSet{}
	egress.add(vpnAddresses...)
	if egress.err != nil {
		return nil, fmt.Errorf("cluster %s: component %s: %w", p.GetCluster(), component, egress.err)
	}
	client := []tlsutil.Usage{tlsutil.UsageClient}
	certs, err := issueAll(p, []leafSpec{
		{vocab.IngressHealthCert, vocab.ClientCA, tlsutil.CertOptions{CommonName: vocab.IngressHealthUser, Usages: client}},
		{vocab.AddonsCert, vocab.ClientCA, tlsutil.CertOptions{CommonName: vocab.AddonsUser, Usages: client}},
		{vocab.EgressProxyCert, vocab.ClusterCA, tlsutil.CertOptions{CommonName: vocab.EgressProxyUser, DNSNames: egress.dns, IPs: egress.ips, Usages: []tlsutil.Usage{tlsutil.UsageServer}}},
	}, keys, validity, now)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: component %s: %w", p.GetCluster(), component, err)
	}
	return withTrust(p, component, certs), nil
}

// AdminKubeconfigCert issues the cluster-admin client certificate (CN
// oneinfra-admin, O system:masters, from vocab.ClientCA) that `cluster
// kubeconfig` embeds, for the caller's key pubDER (PKIX DER), valid for
// validity: the only certificate the coordinator issues in
// system:masters. It returns the PEM certificate.
func AdminKubeconfigCert(p *pb.ClusterPKI, pubDER []byte, validity time.Duration, now time.Time) ([]byte, error) {
	ca, err := CA(p, vocab.ClientCA)
	if err != nil {
		return nil, err
	}
	certPEM, err := tlsutil.IssueFor(ca, pubDER, tlsutil.CertOptions{
		CommonName:    vocab.AdminUser,
		Organizations: []string{vocab.MastersGroup},
		Usages:        []tlsutil.Usage{tlsutil.UsageClient},
		Validity:      validity,
	}, now)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: admin certificate: %w", p.GetCluster(), err)
	}
	return certPEM, nil
}

// withTrust is the set of a component's certificates with what it
// trusts now (Trust) and the trust generation.
func withTrust(p *pb.ClusterPKI, component string, certs map[string]*pb.KeyPair) *pb.ComponentCerts {
	return &pb.ComponentCerts{Component: component, Certs: certs, Trust: Trust(p), TrustGeneration: p.GetTrustGeneration()}
}

// leafSpec is one leaf certificate to issue.
type leafSpec struct {
	name string
	ca   string
	opts tlsutil.CertOptions
}

// issueAll issues every spec for the public key under its name in keys,
// valid for validity (LeafValidity when zero): certificates without
// private keys.
func issueAll(p *pb.ClusterPKI, specs []leafSpec, keys map[string][]byte, validity time.Duration, now time.Time) (map[string]*pb.KeyPair, error) {
	if validity <= 0 {
		validity = LeafValidity
	}
	out := make(map[string]*pb.KeyPair, len(specs))
	for _, s := range specs {
		pub := keys[s.name]
		if len(pub) == 0 {
			return nil, fmt.Errorf("%s certificate: %w", s.name, ErrNoKeys)
		}
		ca, err := CA(p, s.ca)
		if err != nil {
			return nil, err
		}
		s.opts.Validity = validity
		certPEM, err := tlsutil.IssueFor(ca, pub, s.opts, now)
		if err != nil {
			return nil, fmt.Errorf("%s certificate: %w", s.name, err)
		}
		out[s.name] = &pb.KeyPair{CertPem: certPEM}
	}
	return out, nil
}

// sanSet collects subject alternative names without duplicates.
type sanSet struct {
	dns  []string
	ips  []net.IP
	seen map[string]bool
	err  error
}

// add adds names, each an IP address or a DNS name.
func (s *sanSet) add(names ...string) {
	for _, n := range names {
		n = strings.TrimSpace(n)
		if ip := net.ParseIP(n); ip != nil {
			s.addIP(ip)
			continue
		}
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n == "" || strings.ContainsAny(n, " \t/:@[]") {
			if s.err == nil {
				s.err = fmt.Errorf("invalid subject alternative name %q", n)
			}
			continue
		}
		if s.mark("dns:" + n) {
			s.dns = append(s.dns, n)
		}
	}
}

// addIP adds an IP address.
func (s *sanSet) addIP(ip net.IP) {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	if s.mark("ip:" + ip.String()) {
		s.ips = append(s.ips, ip)
	}
}

// mark records key and reports whether it is new.
func (s *sanSet) mark(key string) bool {
	if s.seen == nil {
		s.seen = make(map[string]bool)
	}
	if s.seen[key] {
		return false
	}
	s.seen[key] = true
	return true
}

// hostOf returns the host of a URL, a host:port or a bare host.
func hostOf(s string) string {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "://") {
		if u, err := url.Parse(s); err == nil {
			return u.Hostname()
		}
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
}
