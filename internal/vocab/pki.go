package vocab

// Names of a cluster's certificate authorities (pb.ClusterPKI.Cas, and an
// assignment's ca_certs). What each signs is in coordinator/pki.
const (
	ClusterCA       = "cluster"
	ClientCA        = "client"
	SignerCA        = "signer"
	KubeletClientCA = "kubelet-client"
	EtcdServerCA    = "etcd-server"
	EtcdPeerCA      = "etcd-peer"
	EtcdClientCA    = "etcd-client"
	FrontProxyCA    = "front-proxy"
)

// Names of the leaf certificates in an assignment's certs.
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
	// cluster's add-ons with (ClientCA, in no group: the add-ons' RBAC
	// grants it what it applies).
	AddonsCert = "addons"
	// EgressProxyCert is the serving certificate of the egress proxy at a
	// cluster's VPN endpoint (agent/egress), for the endpoint's VPN
	// address (ClusterCA).
	EgressProxyCert = "egress-proxy"
	// SignerCACert is the signing CA with its key, in a control-plane
	// assignment: the controller-manager signs node certificates.
	SignerCACert = "signer-ca"
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
	EgressProxyUser            = "oneinfra:egress-proxy"
	AdminUser                  = "oneinfra-admin"
	// ControlPlaneUser, in MastersGroup, is what a control-plane replica's
	// agent applies the add-ons' RBAC as, with a certificate it makes
	// itself from the signing CA.
	ControlPlaneUser = "oneinfra:control-plane"
	// KubeletServingApproverUser is what a control-plane replica's agent
	// approves kubelets' serving certificates as (the same way, in no
	// group).
	KubeletServingApproverUser = "oneinfra:kubelet-serving-approver"
	MastersGroup               = "system:masters"
)

// APIServerName is a DNS name of every API server certificate: what
// clients that reach an API server by an address of no certificate (the
// ingress's checks, agents) verify it for.
const APIServerName = "kubernetes"

// DefaultDNSDomain is the cluster DNS domain used when none is given.
const DefaultDNSDomain = "cluster.local"
