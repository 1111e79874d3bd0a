// Package addons keeps the in-cluster objects a worker node join needs:
// the bootstrap token Secrets the workers' kubelets authenticate with, the
// RBAC of TLS bootstrapping, kube-proxy and CoreDNS.
//
// Two identities apply them. The public hypervisor's agent, which runs
// the cluster's ingress, calls Apply on every sync with the add-ons'
// identity (vocab.AddonsUser), which is in no group: it may only write the
// objects Apply sends, in kube-system and the kubernetes EndpointSlice in
// default. Its RBAC, and all the others' (everything with "ClusterRole" or
// "Role" in its kind), is applied by each control-plane replica's agent
// with ApplyRBAC, as a cluster admin whose certificate it makes itself
// (rbac.go). No public hypervisor holds system:masters.
//
// # Rendering
//
// Everything is rendered from Inputs as typed apply configurations and
// labelled app.kubernetes.io/managed-by=oneinfra:
//
//   - one Secret kube-system/bootstrap-token-ID per BootstrapToken, of type
//     bootstrap.kubernetes.io/token, usable for authentication and for
//     signing, and putting its user in TokenGroup as well as in
//     system:bootstrappers. A token whose expiry has passed is not
//     rendered: the API server refuses it and the token cleaner would
//     delete it again. A zero Expires means no expiry.
//   - (ApplyRBAC) the ClusterRoleBindings of TLS bootstrapping, the same
//     as kubeadm's:
//     system:bootstrappers may create CSRs (system:node-bootstrapper), the
//     renewals of system:nodes are approved automatically (selfnodeclient);
//     a token's first node client CSR is approved by the control plane only
//     for the node the token was handed to (csr.go). The
//     controller-manager runs the CSR approver and signer, the
//     bootstrapsigner and the tokencleaner. One more binding lets the API
//     server's kubelet client (vocab.APIServerKubeletClientUser) use the
//     kubelet API (system:kubelet-api-admin), so that kubectl logs and exec
//     work against kubelets that authorize through the API server.
//   - kube-proxy: a ServiceAccount bound to system:node-proxier, a
//     ConfigMap holding a kubeconfig (the APIServer URL, the cluster CA, the
//     service account's token file) and a KubeProxyConfiguration (iptables
//     mode, PodCIDR as the cluster CIDR, and every conntrack sysctl left
//     alone: a worker may run where kube-proxy does not own them), and a
//     DaemonSet on every node (host network, privileged, all taints
//     tolerated, system-node-critical). The pod template carries a hash of
//     the ConfigMap, so a changed configuration rolls the pods at once.
//   - CoreDNS: a ServiceAccount, its ClusterRole and binding, a ConfigMap
//     with the Corefile (serving DNSDomain and the reverse zones, forwarding
//     the rest to the node's resolvers), a one-replica Deployment and the
//     kube-dns Service at ClusterDNS (53/udp, 53/tcp, 9153 for metrics).
//     A Service's cluster IP cannot change: Apply fails on that object if
//     ClusterDNS moves.
//
// # Applying
//
// Apply sends every object with server-side apply, field manager
// FieldManager, forcing conflicts: oneinfra owns these fields, and a hand
// edit of one of them is undone. An object that the API server refuses
// does not stop the others; a transport error (the API unreachable) stops
// the run. The errors name the object ("applying DaemonSet
// kube-system/kube-proxy: ..."). Then the Secrets of bootstrap tokens that
// oneinfra made (found by their labels) and that Inputs no longer holds
// are deleted.
//
// An Applier makes Apply cheap to call every few seconds: it remembers a
// hash of the last Inputs (and API server) applied without error, and
// applies again only when they change or when Resync has passed since, so
// that an object deleted by hand comes back.
//
// Inputs are validated before anything is sent; an error names the field.
// Token secrets appear in no error, and BootstrapToken prints without its
// secret.
package addons
