// Package worker is the agent of a worker node that joins a cluster from
// behind NAT (`oneinfra-agent worker`).
//
// On its first start the worker makes its WireGuard key and a TLS key,
// and trades a worker token for its VPN configuration and a client
// certificate at a public hypervisor's join endpoint (service Join), whose
// certificate it checks against the coordinator CA pinned by --ca-hash.
// The answer (a WorkerConfig) is kept in DATA-DIR, so later starts need no
// token and do not join again.
//
// It then brings the WireGuard tunnel to the cluster's VPN endpoint up
// (kernel WireGuard, else the userspace device of agent/wireguard), routes
// the VPN and the cluster's pod network through it, masquerades its pods'
// traffic to the outside, writes the kubelet's files (bootstrap
// kubeconfig, KubeletConfiguration, client CA) and the CNI configuration,
// and runs the kubelet: as a supervised child (--kubelet-command) or as
// the systemd unit oneinfra-kubelet.service.
//
// While it runs it watches the peer's last handshake, asks the join
// endpoints for a fresh configuration every minute and at once when the
// tunnel looks dead, and reconfigures the device only when the endpoint,
// its key or the allowed networks changed. A cluster CA rotation reaches
// the node the same way (trust.go): new CA bundles for the kubelet, and
// new kubelet certificates once the signing CA changes.
//
// Files, under DATA-DIR (0700):
//
//	wireguard.key            the WireGuard private key (0600)
//	worker.json              the WorkerConfig, bootstrap token included (0600)
//	tls/worker.key           the TLS client key (0600)
//	tls/worker.crt           its certificate from the coordinator CA
//	tls/ca.crt               the coordinator CA, learned through the pin
//	kubelet/bootstrap-kubeconfig  token kubeconfig for TLS bootstrap (0600)
//	kubelet/kubeconfig       written by the kubelet (rotated client cert)
//	kubelet/config.yaml      KubeletConfiguration
//	kubelet/client-ca.crt    CA of the API server's kubelet client cert
//	kubelet/pki/             the kubelet's --cert-dir: its client and serving
//	                         certificates, which it rotates through CSRs
//	cni-ipam/                host-local IPAM allocations
//	kubelet.log              the supervised kubelet's output
//
// and CNI-CONF-DIR/10-oneinfra.conflist, plus, without --kubelet-command,
// /etc/systemd/system/oneinfra-kubelet.service.
package worker
