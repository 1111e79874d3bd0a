// Package cluster makes control-plane assignments for tests, as the
// coordinator would, for members on this host.
package cluster

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// HostIP is a non-loopback IPv4 address of this machine: the API server
// refuses to advertise a loopback one.
func HostIP(t testing.TB) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Fatal("no non-loopback IPv4 address on this machine")
	return ""
}

func freePort(t testing.TB) uint32 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint32(ln.Addr().(*net.TCPAddr).Port)
}

// Assignments makes the PKI of a cluster "demo" and the assignments of n
// control-plane members on ip, with free ports.
func Assignments(t testing.TB, n int, ip string) (*pb.ClusterPKI, []*pb.Assignment) {
	t.Helper()
	p, err := pki.NewClusterPKI("demo", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var comps []*pb.Component
	for i := 0; i < n; i++ {
		ports := map[string]uint32{}
		for _, name := range []string{"apiserver", "etcd-client", "etcd-peer", "controller-manager", "scheduler"} {
			ports[name] = freePort(t)
		}
		comps = append(comps, &pb.Component{Metadata: &pb.ObjectMeta{Name: fmt.Sprintf("demo-cp-%d", i)}, Spec: &pb.ComponentSpec{Cluster: "demo", Role: "control-plane", Ports: ports}})
	}
	var out []*pb.Assignment
	for _, c := range comps {
		certs := ControlPlaneCerts(t, p, pki.ControlPlaneIdentity{Component: c.Metadata.Name, HypervisorAddresses: []string{ip},
			ServiceCIDR: "10.96.0.0/12"})
		certs.Certs["signer-ca"] = p.Cas[vocab.SignerCA]
		as := &pb.Assignment{
			Component:            c,
			ClusterSpec:          &pb.ClusterSpec{Networking: &pb.NetworkingSpec{PodCidr: "10.244.0.0/16", ServiceCidr: "10.96.0.0/12"}},
			CaCerts:              map[string][]byte{},
			Certs:                certs.Certs,
			ServiceAccountKeyPem: p.ServiceAccountKeyPem,
			EncryptionKey:        p.EncryptionKey,
			Images:               map[string]string{"etcd": "e", "kube-apiserver": "a", "kube-controller-manager": "c", "kube-scheduler": "s"},
		}
		for name, ca := range p.Cas {
			as.CaCerts[name] = ca.CertPem
		}
		for _, o := range comps {
			as.EtcdPeers = append(as.EtcdPeers, &pb.Endpoint{Name: o.Metadata.Name, Address: ip, Port: o.Spec.Ports["etcd-peer"]})
			as.EtcdClients = append(as.EtcdClients, &pb.Endpoint{Name: o.Metadata.Name, Address: ip, Port: o.Spec.Ports["etcd-client"]})
			as.ApiServers = append(as.ApiServers, &pb.Endpoint{Name: o.Metadata.Name, Address: ip, Port: o.Spec.Ports["apiserver"]})
		}
		as.EtcdMembers = slices.Clone(as.EtcdPeers)
		as.ReplicaFloor = uint32(n)
		out = append(out, as)
	}
	return p, out
}

// ControlPlaneCerts issues a control-plane component's certificates as the
// coordinator does, for keys made here, and gives each its private key as
// the component's agent does.
func ControlPlaneCerts(t testing.TB, p *pb.ClusterPKI, id pki.ControlPlaneIdentity) *pb.ComponentCerts {
	t.Helper()
	pubs, privs := testutil.KeySet(t, pki.KeyNames(resources.RoleControlPlane))
	certs, err := pki.ControlPlaneCerts(p, id, pubs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return withKeys(certs, privs)
}

// IngressCerts is ControlPlaneCerts for an ingress component.
func IngressCerts(t testing.TB, p *pb.ClusterPKI, component string) *pb.ComponentCerts {
	t.Helper()
	pubs, privs := testutil.KeySet(t, pki.KeyNames(resources.RoleIngress))
	certs, err := pki.IngressCerts(p, component, nil, pubs, pki.LeafValidity, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return withKeys(certs, privs)
}

// AdminCert is the admin kubeconfig certificate of p, for a key made
// here, with that key.
func AdminCert(t testing.TB, p *pb.ClusterPKI) *pb.KeyPair {
	t.Helper()
	pubs, privs := testutil.KeySet(t, []string{"admin"})
	certPEM, err := pki.AdminKubeconfigCert(p, pubs["admin"], time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &pb.KeyPair{CertPem: certPEM, KeyPem: privs["admin"]}
}

func withKeys(certs *pb.ComponentCerts, privs map[string][]byte) *pb.ComponentCerts {
	for name, kp := range certs.Certs {
		kp.KeyPem = privs[name]
	}
	return certs
}
