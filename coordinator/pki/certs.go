package pki

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// Names of the leaf certificates in pb.ComponentCerts.Certs.
const (
	// APIServerCert is the API server serving certificate (ClusterCA).
	APIServerCert = "apiserver"
	// APIServerKubeletClientCert is the API server's client certificate
	// towards kubelets (KubeletClientCA).
	APIServerKubeletClientCert = "apiserver-kubelet-client"
	// APIServerEtcdClientCert is the API server's client certificate
	// towards etcd (EtcdClientCA).
	APIServerEtcdClientCert = "apiserver-etcd-client"
	// EtcdServerCert is etcd's serving certificate (EtcdServerCA).
	EtcdServerCert = "etcd-server"
	// EtcdPeerCert is etcd's peer certificate (EtcdPeerCA).
	EtcdPeerCert = "etcd-peer"
	// FrontProxyClientCert is the API server's aggregation-layer client
	// certificate (FrontProxyCA).
	FrontProxyClientCert = "front-proxy-client"
	// ControllerManagerCert is the controller-manager's client certificate
	// (ClientCA).
	ControllerManagerCert = "controller-manager"
	// SchedulerCert is the scheduler's client certificate (ClientCA).
	SchedulerCert = "scheduler"
	// IngressHealthCert is the client certificate haproxy uses to check the
	// API servers' /readyz (ClientCA).
	IngressHealthCert = "ingress-health"
	// AddonsCert is the client certificate the ingress's agent applies the
	// cluster's add-ons with (ClientCA, in system:masters: it creates RBAC).
	AddonsCert = "addons"
)

// Identities (certificate CN and O) of the leaf certificates.
const (
	APIServerUser              = "kube-apiserver"
	APIServerKubeletClientUser = "kube-apiserver-kubelet-client"
	APIServerEtcdClientUser    = "kube-apiserver-etcd-client"
	FrontProxyClientUser       = "front-proxy-client"
	ControllerManagerUser      = "system:kube-controller-manager"
	SchedulerUser              = "system:kube-scheduler"
	IngressHealthUser          = "oneinfra:ingress-health"
	AddonsUser                 = "oneinfra:addons"
	AdminUser                  = "oneinfra-admin"
	MastersGroup               = "system:masters"
)

// DefaultDNSDomain is the cluster DNS domain used when none is given.
const DefaultDNSDomain = "cluster.local"

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
	// DNSDomain is the cluster DNS domain; DefaultDNSDomain when empty.
	DNSDomain string
}

// ServiceIP returns the first address of a service CIDR: the cluster IP of
// the kubernetes service.
func ServiceIP(serviceCIDR string) (net.IP, error) {
	prefix, err := netip.ParsePrefix(strings.TrimSpace(serviceCIDR))
	if err != nil {
		return nil, fmt.Errorf("service CIDR %q: %w", serviceCIDR, err)
	}
	prefix = prefix.Masked()
	first := prefix.Addr().Next()
	if !first.IsValid() || !prefix.Contains(first) {
		return nil, fmt.Errorf("service CIDR %q has no room for the kubernetes service", serviceCIDR)
	}
	return net.IP(first.AsSlice()), nil
}

// DNSServiceIP returns the tenth address of a service CIDR: the cluster IP
// of the kube-dns service, as kubeadm chooses it.
func DNSServiceIP(serviceCIDR string) (net.IP, error) {
	first, err := ServiceIP(serviceCIDR)
	if err != nil {
		return nil, err
	}
	a, _ := netip.AddrFromSlice(first)
	prefix := netip.MustParsePrefix(strings.TrimSpace(serviceCIDR)).Masked()
	for range 9 {
		a = a.Next()
	}
	if !prefix.Contains(a) {
		return nil, fmt.Errorf("service CIDR %q has no room for the DNS service", serviceCIDR)
	}
	return net.IP(a.AsSlice()), nil
}

// ControlPlaneCerts issues every leaf certificate of one control-plane
// component, valid for LeafValidity from now:
//
//   - APIServerCert: serving, CN kube-apiserver, names kubernetes,
//     kubernetes.default, kubernetes.default.svc,
//     kubernetes.default.svc.DOMAIN, localhost, 127.0.0.1, the kubernetes
//     service IP, the hypervisor and ingress addresses, the API server
//     endpoint host and the extra SANs.
//   - APIServerKubeletClientCert: client, CN kube-apiserver-kubelet-client.
//   - APIServerEtcdClientCert: client, CN kube-apiserver-etcd-client.
//   - EtcdServerCert: server and client (etcd's gRPC gateway dials etcd
//     itself with it), CN the component, names the hypervisor addresses,
//     localhost and 127.0.0.1.
//   - EtcdPeerCert: server and client, CN the component, names the
//     hypervisor addresses.
//   - FrontProxyClientCert: client, CN front-proxy-client.
//   - ControllerManagerCert: client, CN system:kube-controller-manager.
//   - SchedulerCert: client, CN system:kube-scheduler.
//
// None of them is in a group.
func ControlPlaneCerts(p *pb.ClusterPKI, id ControlPlaneIdentity, now time.Time) (*pb.ComponentCerts, error) {
	if id.Component == "" {
		return nil, errors.New("component name is required")
	}
	fail := func(err error) (*pb.ComponentCerts, error) {
		return nil, fmt.Errorf("cluster %s: component %s: %w", p.GetCluster(), id.Component, err)
	}
	if len(id.HypervisorAddresses) == 0 {
		return fail(errors.New("a hypervisor address is required"))
	}
	serviceIP, err := ServiceIP(id.ServiceCIDR)
	if err != nil {
		return fail(err)
	}
	domain := id.DNSDomain
	if domain == "" {
		domain = DefaultDNSDomain
	}

	api := &sanSet{}
	api.add("kubernetes", "kubernetes.default", "kubernetes.default.svc",
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
	specs := []leafSpec{
		{APIServerCert, ClusterCA, tlsutil.CertOptions{CommonName: APIServerUser, DNSNames: api.dns, IPs: api.ips, Usages: server}},
		{APIServerKubeletClientCert, KubeletClientCA, tlsutil.CertOptions{CommonName: APIServerKubeletClientUser, Usages: client}},
		{APIServerEtcdClientCert, EtcdClientCA, tlsutil.CertOptions{CommonName: APIServerEtcdClientUser, Usages: client}},
		{EtcdServerCert, EtcdServerCA, tlsutil.CertOptions{CommonName: id.Component, DNSNames: etcdServer.dns, IPs: etcdServer.ips, Usages: both}},
		{EtcdPeerCert, EtcdPeerCA, tlsutil.CertOptions{CommonName: id.Component, DNSNames: etcdPeer.dns, IPs: etcdPeer.ips, Usages: both}},
		{FrontProxyClientCert, FrontProxyCA, tlsutil.CertOptions{CommonName: FrontProxyClientUser, Usages: client}},
		{ControllerManagerCert, ClientCA, tlsutil.CertOptions{CommonName: ControllerManagerUser, Usages: client}},
		{SchedulerCert, ClientCA, tlsutil.CertOptions{CommonName: SchedulerUser, Usages: client}},
	}
	certs, err := issueAll(p, specs, now)
	if err != nil {
		return fail(err)
	}
	return &pb.ComponentCerts{Component: id.Component, Certs: certs}, nil
}

// IngressCerts issues the certificates of a cluster's ingress component:
// IngressHealthCert, a client certificate from ClientCA with CN
// oneinfra:ingress-health and no group, which haproxy presents when it
// checks the API servers' /readyz (readable by any authenticated user). To
// verify the API servers, haproxy needs only the public certificate of
// ClusterCA (CACertPEM). And AddonsCert (CN oneinfra:addons, O
// system:masters), with which the agent applies the objects worker nodes
// need (bootstrap tokens, RBAC, kube-proxy, CoreDNS).
func IngressCerts(p *pb.ClusterPKI, component string, now time.Time) (*pb.ComponentCerts, error) {
	if component == "" {
		return nil, errors.New("component name is required")
	}
	client := []tlsutil.Usage{tlsutil.UsageClient}
	certs, err := issueAll(p, []leafSpec{
		{IngressHealthCert, ClientCA, tlsutil.CertOptions{CommonName: IngressHealthUser, Usages: client}},
		{AddonsCert, ClientCA, tlsutil.CertOptions{CommonName: AddonsUser, Organizations: []string{MastersGroup}, Usages: client}},
	}, now)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: component %s: %w", p.GetCluster(), component, err)
	}
	return &pb.ComponentCerts{Component: component, Certs: certs}, nil
}

// AdminKubeconfigCert issues the cluster-admin client certificate (CN
// oneinfra-admin, O system:masters, from ClientCA) that `cluster
// kubeconfig` embeds, valid for validity. Only it and AddonsCert are in
// system:masters.
func AdminKubeconfigCert(p *pb.ClusterPKI, validity time.Duration, now time.Time) (*pb.KeyPair, error) {
	ca, err := CA(p, ClientCA)
	if err != nil {
		return nil, err
	}
	kp, err := tlsutil.Issue(ca, tlsutil.CertOptions{
		CommonName:    AdminUser,
		Organizations: []string{MastersGroup},
		Usages:        []tlsutil.Usage{tlsutil.UsageClient},
		Validity:      validity,
	}, now)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: admin certificate: %w", p.GetCluster(), err)
	}
	return kp, nil
}

// leafSpec is one leaf certificate to issue.
type leafSpec struct {
	name string
	ca   string
	opts tlsutil.CertOptions
}

// issueAll issues every spec with LeafValidity.
func issueAll(p *pb.ClusterPKI, specs []leafSpec, now time.Time) (map[string]*pb.KeyPair, error) {
	out := make(map[string]*pb.KeyPair, len(specs))
	for _, s := range specs {
		ca, err := CA(p, s.ca)
		if err != nil {
			return nil, err
		}
		s.opts.Validity = LeafValidity
		kp, err := tlsutil.Issue(ca, s.opts, now)
		if err != nil {
			return nil, fmt.Errorf("%s certificate: %w", s.name, err)
		}
		out[s.name] = kp
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
