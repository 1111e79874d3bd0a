package vocab

// Host port names, the keys of ComponentSpec.Ports.
const (
	PortAPIServer         = "apiserver"
	PortEtcdClient        = "etcd-client"
	PortEtcdPeer          = "etcd-peer"
	PortControllerManager = "controller-manager"
	PortScheduler         = "scheduler"
	PortWireGuard         = "wireguard"
)

// Component states agents report (ComponentStatus.state).
const (
	StateRunning  = "Running"
	StatePending  = "Pending"
	StateFailed   = "Failed"
	StateRemoving = "Removing"
	// StateOrphaned: stopped with its files kept (ComponentSpec.orphaned).
	StateOrphaned = "Orphaned"
)

// Conditions agents report on components.
const (
	// CondAPIReachable: the cluster's API answers /readyz through this
	// ingress (the coordinator's Ready condition depends on it).
	CondAPIReachable = "APIReachable"
	// CondEtcdMember: this control-plane replica is a voting etcd member.
	CondEtcdMember = "EtcdMember"
	// CondAPIServerReady: this control-plane replica's API server answers
	// /readyz.
	CondAPIServerReady = "APIServerReady"
	// CondVPNEndpoint: the cluster's WireGuard endpoint runs here.
	CondVPNEndpoint = "VPNEndpoint"
	// CondVPNRoute: this host routes the cluster's VPN through its
	// endpoint.
	CondVPNRoute = "VPNRoute"
	// CondAddons: the objects worker nodes need are applied in the
	// cluster.
	CondAddons = "AddonsApplied"
)

// Image keys of an assignment's images: the containers they run.
const (
	ImagePause                 = "pause"
	ImageEtcd                  = "etcd"
	ImageKubeAPIServer         = "kube-apiserver"
	ImageKubeControllerManager = "kube-controller-manager"
	ImageKubeScheduler         = "kube-scheduler"
	ImageHAProxy               = "haproxy"
	ImageKubeProxy             = "kube-proxy"
	ImageCoreDNS               = "coredns"
)
