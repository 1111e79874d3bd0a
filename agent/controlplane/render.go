// Package controlplane runs a cluster's control-plane replica on a private
// hypervisor: an etcd member, and kube-apiserver, kube-controller-manager
// and kube-scheduler, as two CRI pods in the host network. Files live under
// the component's config dir, etcd's data under its data dir; both are
// mounted at the same paths in the containers, so the flags name host
// paths.
//
// etcd membership is managed for real (etcd.go): the members placed with a
// new cluster start it together (static bootstrap), later ones join as
// learners and are promoted once in sync, and a member leaves the cluster
// before its pod is removed.
package controlplane

import (
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/kubeconfig"
	"github.com/oneinfra/oneinfra/internal/renewal"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"sigs.k8s.io/yaml"
)

// EtcdBootstrap is how this member's etcd starts the first time; the agent
// keeps it so that later renders give the same pod.
type EtcdBootstrap struct {
	// State is "new" (this member starts the cluster) or "existing".
	State string `json:"state"`
	// InitialCluster is etcd's --initial-cluster: NAME=PEER-URL,...
	InitialCluster string `json:"initialCluster"`
	// Attempt counts the decisions made again by a Repair; it labels the
	// pod, so that a repaired member's etcd always starts anew.
	Attempt int `json:"attempt,omitempty"`
}

// EtcdPod is the name of a replica's etcd pod (the other runs the
// Kubernetes control plane).
const EtcdPod = "etcd"

// labelEtcdAttempt labels an etcd pod whose bootstrap decision was made
// again (EtcdBootstrap.Attempt).
const labelEtcdAttempt = "oneinfra.io/etcd-attempt"

// labelTrustGeneration labels an etcd pod with the cluster trust
// generation of the CAs it trusts (Assignment.trust_generation), from the
// first CA rotation.
const labelTrustGeneration = "oneinfra.io/trust-generation"

// labelCertGeneration labels the Kubernetes pod with the generation of the
// certificates it runs (Assignment.cert_generation), from the first renewal.
const labelCertGeneration = "oneinfra.io/cert-generation"

// member is what Render and the etcd calls need to know of this replica.
type member struct {
	name, address string
	ports         map[string]uint32
}

func self(as *pb.Assignment) (member, error) {
	m := member{name: as.GetComponent().GetMetadata().GetName(), ports: as.GetComponent().GetSpec().GetPorts()}
	for _, p := range as.EtcdPeers {
		if p.Name == m.name {
			m.address = p.Address
		}
	}
	if m.address == "" {
		return m, fmt.Errorf("component %s: not among its own etcd peers", m.name)
	}
	for _, name := range []string{vocab.PortAPIServer, vocab.PortEtcdClient, vocab.PortEtcdPeer, vocab.PortControllerManager, vocab.PortScheduler} {
		if m.ports[name] == 0 {
			return m, fmt.Errorf("component %s: no %s port assigned", m.name, name)
		}
	}
	return m, nil
}

func url(address string, port uint32) string {
	return "https://" + net.JoinHostPort(address, strconv.Itoa(int(port)))
}

func (m member) peerURL() string   { return url(m.address, m.ports[vocab.PortEtcdPeer]) }
func (m member) clientURL() string { return url(m.address, m.ports[vocab.PortEtcdClient]) }

// Render makes the replica's plan: its files and its two pods.
func Render(as *pb.Assignment, paths host.Paths, boot EtcdBootstrap) (*host.Plan, error) {
	m, err := self(as)
	if err != nil {
		return nil, err
	}
	files, err := renderFiles(as, paths, m)
	if err != nil {
		return nil, err
	}
	return &host.Plan{
		Files: files,
		Dirs:  []string{paths.DataDir()},
		Pods:  []cri.Pod{etcdPod(as, paths, m, boot), controlPlanePod(as, paths, m)},
	}, nil
}

// Names of the files in the config dir.
const (
	fileClusterCA        = "cluster-ca.crt"
	fileClientCABundle   = "client-ca-bundle.crt"
	fileEtcdServerCA     = "etcd-server-ca.crt"
	fileEtcdTrustedCA    = "etcd-trusted-ca.crt"
	fileEtcdPeerCA       = "etcd-peer-ca.crt"
	fileFrontProxyCA     = "front-proxy-ca.crt"
	fileKubeletCA        = "kubelet-ca.crt"
	fileSAKey            = "sa.key"
	fileSAPub            = "sa.pub"
	fileEncryption       = "encryption-config.yaml"
	fileAuthentication   = "authentication-config.yaml"
	fileEgressSelector   = "egress-selector.yaml"
	fileControllerKubecf = "controller-manager.kubeconfig"
	fileSchedulerKubecf  = "scheduler.kubeconfig"
)

func renderFiles(as *pb.Assignment, paths host.Paths, m member) ([]host.File, error) {
	ca := func(name string) []byte { return as.CaCerts[name] }
	var files []host.File
	public := func(name string, data []byte) {
		files = append(files, host.File{Path: paths.Config(name), Data: data, Mode: 0o644})
	}
	secret := func(name string, data []byte) {
		files = append(files, host.File{Path: paths.Config(name), Data: data, Mode: 0o600})
	}
	for _, n := range []string{vocab.ClusterCA, vocab.EtcdServerCA, vocab.EtcdPeerCA, vocab.FrontProxyCA, vocab.ClientCA, vocab.SignerCA, vocab.EtcdClientCA} {
		if len(ca(n)) == 0 {
			return nil, fmt.Errorf("assignment lacks the %s CA", n)
		}
	}
	public(fileClusterCA, ca(vocab.ClusterCA))
	public(fileClientCABundle, append(append([]byte{}, ca(vocab.ClientCA)...), ca(vocab.SignerCA)...))
	public(fileEtcdServerCA, ca(vocab.EtcdServerCA))
	// etcd trusts its clients' CA, and its own server CA for the gateway
	// that calls back into it with the server certificate.
	public(fileEtcdTrustedCA, append(append([]byte{}, ca(vocab.EtcdClientCA)...), ca(vocab.EtcdServerCA)...))
	public(fileEtcdPeerCA, ca(vocab.EtcdPeerCA))
	public(fileFrontProxyCA, ca(vocab.FrontProxyCA))
	// Kubelets serve with certificates of the signing CA: during a CA
	// rotation, of the old one or the new one.
	public(fileKubeletCA, ca(vocab.SignerCA))
	for _, n := range []string{vocab.APIServerCert, vocab.APIServerKubeletClientCert, vocab.APIServerEtcdClientCert, vocab.EtcdServerCert,
		vocab.EtcdPeerCert, vocab.FrontProxyClientCert, vocab.ControllerManagerCert, vocab.SchedulerCert, vocab.SignerCACert} {
		kp := as.Certs[n]
		if kp == nil {
			return nil, fmt.Errorf("assignment lacks the %s certificate", n)
		}
		public(n+".crt", kp.CertPem)
		secret(n+".key", kp.KeyPem)
	}
	if len(as.ServiceAccountKeyPem) == 0 || len(as.EncryptionKey) != 32 {
		return nil, fmt.Errorf("assignment lacks the service-account key or the 32-byte encryption key")
	}
	secret(fileSAKey, as.ServiceAccountKeyPem)
	key, err := tlsutil.ParseKeyPEM(as.ServiceAccountKeyPem)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	pub, err := tlsutil.EncodePublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	public(fileSAPub, pub)
	enc, err := yaml.Marshal(encryptionConfig(as.EncryptionKey))
	if err != nil {
		return nil, err
	}
	secret(fileEncryption, enc)
	auth, err := yaml.Marshal(authenticationConfig())
	if err != nil {
		return nil, err
	}
	public(fileAuthentication, auth)
	if as.GetVpn().GetEndpointAddress() != "" {
		egress, err := yaml.Marshal(egressSelectorConfig(as.Vpn.EndpointAddress, paths))
		if err != nil {
			return nil, err
		}
		public(fileEgressSelector, egress)
	}
	local := url("127.0.0.1", m.ports[vocab.PortAPIServer])
	for _, kc := range []struct{ file, cert, user string }{
		{fileControllerKubecf, vocab.ControllerManagerCert, "system:kube-controller-manager"},
		{fileSchedulerKubecf, vocab.SchedulerCert, "system:kube-scheduler"},
	} {
		b, err := kubeconfig.WithCert(paths.Cluster, local, ca(vocab.ClusterCA), as.Certs[kc.cert], kc.user)
		if err != nil {
			return nil, err
		}
		secret(kc.file, b)
	}
	return files, nil
}

// encryptionConfig encrypts Secrets with secretbox and the cluster's key;
// identity lets the API server read what was stored before.
func encryptionConfig(key []byte) map[string]any {
	return map[string]any{
		"apiVersion": "apiserver.config.k8s.io/v1",
		"kind":       "EncryptionConfiguration",
		"resources": []any{map[string]any{
			"resources": []string{"secrets"},
			"providers": []any{
				map[string]any{"secretbox": map[string]any{"keys": []any{map[string]any{
					"name": "key1", "secret": base64.StdEncoding.EncodeToString(key)}}}},
				map[string]any{"identity": map[string]any{}},
			},
		}},
	}
}

// authenticationConfig allows anonymous requests to the health endpoints
// only.
func authenticationConfig() map[string]any {
	return map[string]any{
		"apiVersion": "apiserver.config.k8s.io/v1",
		"kind":       "AuthenticationConfiguration",
		"anonymous": map[string]any{
			"enabled":    true,
			"conditions": []any{map[string]any{"path": "/livez"}, map[string]any{"path": "/readyz"}, map[string]any{"path": "/healthz"}},
		},
	}
}

// egressSelectorConfig sends the API server's traffic to the cluster's
// nodes, pods and services (kubelets; webhooks, aggregated APIs and the
// proxy, at endpoint addresses) through the egress proxy at the VPN
// endpoint (agent/egress): the nodes are behind NATs, reached only through
// the tunnel. It verifies the proxy against the cluster CA, and presents
// the kubelet-client certificate.
func egressSelectorConfig(endpoint string, paths host.Paths) map[string]any {
	return map[string]any{
		"apiVersion": "apiserver.k8s.io/v1beta1",
		"kind":       "EgressSelectorConfiguration",
		"egressSelections": []any{map[string]any{
			"name": "cluster",
			"connection": map[string]any{
				"proxyProtocol": "HTTPConnect",
				"transport": map[string]any{"tcp": map[string]any{
					"url": url(endpoint, resources.EgressProxyPort),
					"tlsConfig": map[string]any{
						"caBundle":   paths.Config(fileClusterCA),
						"clientCert": paths.Config(vocab.APIServerKubeletClientCert + ".crt"),
						"clientKey":  paths.Config(vocab.APIServerKubeletClientCert + ".key"),
					},
				}},
			},
		}},
	}
}

func mounts(paths host.Paths, data bool) []cri.Mount {
	ms := []cri.Mount{{HostPath: paths.ConfigDir(), ContainerPath: paths.ConfigDir(), ReadOnly: true}}
	if data {
		ms = append(ms, cri.Mount{HostPath: paths.DataDir(), ContainerPath: paths.DataDir()})
	}
	return ms
}

func etcdArgs(paths host.Paths, m member, boot EtcdBootstrap) []string {
	listen := []string{m.clientURL()}
	if m.address != "127.0.0.1" {
		listen = append(listen, url("127.0.0.1", m.ports[vocab.PortEtcdClient]))
	}
	c := paths.Config
	return []string{
		"--name=" + m.name,
		"--data-dir=" + paths.DataDir() + "/etcd",
		"--listen-client-urls=" + strings.Join(listen, ","),
		"--advertise-client-urls=" + m.clientURL(),
		"--listen-peer-urls=" + m.peerURL(),
		"--initial-advertise-peer-urls=" + m.peerURL(),
		"--initial-cluster=" + boot.InitialCluster,
		"--initial-cluster-state=" + boot.State,
		"--initial-cluster-token=" + paths.Cluster,
		"--cert-file=" + c(vocab.EtcdServerCert+".crt"),
		"--key-file=" + c(vocab.EtcdServerCert+".key"),
		"--client-cert-auth=true",
		"--trusted-ca-file=" + c(fileEtcdTrustedCA),
		"--peer-cert-file=" + c(vocab.EtcdPeerCert+".crt"),
		"--peer-key-file=" + c(vocab.EtcdPeerCert+".key"),
		"--peer-client-cert-auth=true",
		"--peer-trusted-ca-file=" + c(fileEtcdPeerCA),
		"--snapshot-count=10000",
	}
}

func etcdPod(as *pb.Assignment, paths host.Paths, m member, boot EtcdBootstrap) cri.Pod {
	pod := cri.Pod{Component: paths.Component, Name: EtcdPod, Containers: []cri.Container{{
		Name: "etcd", Image: as.Images[vocab.ImageEtcd], Command: append([]string{"etcd"}, etcdArgs(paths, m, boot)...),
		Mounts: mounts(paths, true),
	}}}
	labels := map[string]string{}
	if boot.Attempt > 0 {
		labels[labelEtcdAttempt] = strconv.Itoa(boot.Attempt)
	}
	// etcd reads the CAs it trusts only as it starts (its certificates, on
	// every connection): a CA rotation's stage restarts it.
	if as.TrustGeneration > 0 {
		labels[labelTrustGeneration] = strconv.FormatUint(as.TrustGeneration, 10)
	}
	if len(labels) > 0 {
		pod.Labels = labels
	}
	return pod
}

func apiServerArgs(as *pb.Assignment, paths host.Paths, m member) []string {
	c := paths.Config
	issuer := as.ApiServerEndpoint
	if issuer == "" {
		issuer = url(m.address, m.ports[vocab.PortAPIServer])
	}
	// Pods run only on worker nodes, which reach the API through the VPN
	// and the ingress, not at the API servers' own addresses: the
	// kubernetes service's endpoints are the ingress's (agent/addons), not
	// each API server's.
	reconciler := "lease"
	var egress []string
	if as.GetVpn() != nil {
		reconciler = "none"
	}
	if as.GetVpn().GetEndpointAddress() != "" {
		// Webhooks and aggregated APIs are reached at their endpoints'
		// (pod) addresses, through the egress proxy.
		egress = []string{"--egress-selector-config-file=" + c(fileEgressSelector), "--enable-aggregator-routing=true"}
	}
	return append(egress, []string{
		"--advertise-address=" + m.address,
		"--endpoint-reconciler-type=" + reconciler,
		"--secure-port=" + strconv.Itoa(int(m.ports[vocab.PortAPIServer])),
		"--etcd-servers=" + url("127.0.0.1", m.ports[vocab.PortEtcdClient]),
		"--etcd-cafile=" + c(fileEtcdServerCA),
		"--etcd-certfile=" + c(vocab.APIServerEtcdClientCert+".crt"),
		"--etcd-keyfile=" + c(vocab.APIServerEtcdClientCert+".key"),
		// A hypervisor runs many control planes: an etcd slowed by its
		// neighbours (or by a member joining) is not a failed one.
		// kube-apiserver's 2s would make /readyz fail and the ingress drop
		// a serving API server; 4s stays under haproxy's check timeout.
		"--etcd-healthcheck-timeout=4s",
		"--etcd-readycheck-timeout=4s",
		"--tls-cert-file=" + c(vocab.APIServerCert+".crt"),
		"--tls-private-key-file=" + c(vocab.APIServerCert+".key"),
		"--client-ca-file=" + c(fileClientCABundle),
		"--authorization-mode=Node,RBAC",
		"--authentication-config=" + c(fileAuthentication),
		"--enable-bootstrap-token-auth=true",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--encryption-provider-config=" + c(fileEncryption),
		"--service-account-issuer=" + issuer,
		"--service-account-key-file=" + c(fileSAPub),
		"--service-account-signing-key-file=" + c(fileSAKey),
		"--service-cluster-ip-range=" + as.GetClusterSpec().GetNetworking().GetServiceCidr(),
		"--kubelet-client-certificate=" + c(vocab.APIServerKubeletClientCert+".crt"),
		"--kubelet-client-key=" + c(vocab.APIServerKubeletClientCert+".key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		// Kubelets serve with certificates the signing CA signed for their
		// node (agent/addons approves the CSRs): logs and exec check them.
		"--kubelet-certificate-authority=" + kubeletCA(as, c),
		"--requestheader-client-ca-file=" + c(fileFrontProxyCA),
		"--requestheader-allowed-names=" + vocab.FrontProxyClientUser,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + c(vocab.FrontProxyClientCert+".crt"),
		"--proxy-client-key-file=" + c(vocab.FrontProxyClientCert+".key"),
		"--profiling=false",
	}...)
}

// kubeletCA is the API server's --kubelet-certificate-authority: the
// signing CA's bundle once a CA rotation began, the signing CA before (so
// that the pods of replicas that never rotated stay as they are).
func kubeletCA(as *pb.Assignment, c func(string) string) string {
	if as.TrustGeneration > 0 {
		return c(fileKubeletCA)
	}
	return c(vocab.SignerCACert + ".crt")
}

func controllerManagerArgs(as *pb.Assignment, paths host.Paths, m member) []string {
	c := paths.Config
	kubeconfig := c(fileControllerKubecf)
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(int(m.ports[vocab.PortControllerManager])),
		"--cluster-name=" + paths.Cluster,
		"--cluster-signing-cert-file=" + c(vocab.SignerCACert+".crt"),
		"--cluster-signing-key-file=" + c(vocab.SignerCACert+".key"),
		// Kubelets' certificates live as long as oneinfra's, and are
		// rotated by the kubelets themselves.
		"--cluster-signing-duration=" + signingDuration(as).String(),
		"--root-ca-file=" + c(fileClusterCA),
		"--client-ca-file=" + c(fileClientCABundle),
		"--requestheader-client-ca-file=" + c(fileFrontProxyCA),
		"--service-account-private-key-file=" + c(fileSAKey),
		"--use-service-account-credentials=true",
		// No --allocate-node-cidrs: the coordinator gives each node its
		// pod subnet when it joins, and its CNI configuration uses it.
		"--cluster-cidr=" + as.GetClusterSpec().GetNetworking().GetPodCidr(),
		"--service-cluster-ip-range=" + as.GetClusterSpec().GetNetworking().GetServiceCidr(),
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--leader-elect=true",
		"--profiling=false",
	}
}

// signingDuration is how long the certificates the controller-manager
// signs live: as long as the replica's own (its controller-manager's
// certificate, which changes only with a new generation, as this pod
// does), to the minute; a year when that cannot be read.
func signingDuration(as *pb.Assignment) time.Duration {
	cert, err := tlsutil.ParseCertPEM(as.Certs[vocab.ControllerManagerCert].GetCertPem())
	if err != nil {
		return 8760 * time.Hour
	}
	return max(cert.NotAfter.Sub(renewal.Issued(cert.NotBefore, cert.NotAfter)).Round(time.Minute), time.Minute)
}

func schedulerArgs(paths host.Paths, m member) []string {
	kubeconfig := paths.Config(fileSchedulerKubecf)
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(int(m.ports[vocab.PortScheduler])),
		"--leader-elect=true",
		"--profiling=false",
	}
}

// goMemory is the Go runtime settings of the components whose idle
// memory they cut, as measured: the API server's heap grows to 1.5 times
// what it holds (GOGC=50; twice by default), 33 MiB less at idle for a
// little more GC. The controller-manager and the scheduler gained nothing
// from it (most of their memory is their binaries' pages).
var goMemory = map[string]map[string]string{
	"kube-apiserver": {"GOGC": "50"},
}

// controlPlanePod runs the Kubernetes control plane. A new generation of
// certificates labels it anew, so that it restarts with them (the
// coordinator has the ingress drop the replica first).
func controlPlanePod(as *pb.Assignment, paths host.Paths, m member) cri.Pod {
	container := func(name string, args []string) cri.Container {
		return cri.Container{Name: name, Image: as.Images[name], Command: append([]string{name}, args...), Mounts: mounts(paths, false), Env: goMemory[name]}
	}
	pod := cri.Pod{Component: paths.Component, Name: "control-plane", Containers: []cri.Container{
		container("kube-apiserver", apiServerArgs(as, paths, m)),
		container("kube-controller-manager", controllerManagerArgs(as, paths, m)),
		container("kube-scheduler", schedulerArgs(paths, m)),
	}}
	if as.CertGeneration > 0 {
		pod.Labels = map[string]string{labelCertGeneration: strconv.FormatUint(as.CertGeneration, 10)}
	}
	return pod
}
