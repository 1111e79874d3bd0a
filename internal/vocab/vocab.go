// Package vocab is the vocabulary the coordinator and the agents share:
// certificate roles, the names of certificates and authorities in an
// assignment, port names, component states and condition types. Both
// sides import it, so that no name is typed twice; the agent imports
// nothing under coordinator/.
package vocab

// Roles: the one subject organization of every certificate the
// coordinator CA signs; the CN names the holder.
const (
	// RoleServer is a coordinator server (CN: its Raft ID). It serves the
	// API and Raft and calls the other servers.
	RoleServer = "oneinfra:server"
	// RoleOperator is a named operator (CN: the operator's name); the
	// bootstrap one is "admin".
	RoleOperator = "oneinfra:admin"
	// RoleHypervisor is a hypervisor's agent (CN: the hypervisor), a
	// client only.
	RoleHypervisor = "oneinfra:hypervisor"
	// RoleJoinEndpoint is a public hypervisor's worker join service (CN:
	// the hypervisor), a server only, with a key of its own.
	RoleJoinEndpoint = "oneinfra:join-endpoint"
	// RoleWorker is a worker node's agent (CN: the node), a client of its
	// join endpoint; it also carries ClusterOrgPrefix+CLUSTER.
	RoleWorker = "oneinfra:worker"
)

// Roles lists every role, for a certificate's holder to be found.
var Roles = []string{RoleServer, RoleOperator, RoleHypervisor, RoleJoinEndpoint, RoleWorker}

// ClusterOrgPrefix starts the organization naming a worker's cluster.
const ClusterOrgPrefix = "oneinfra:cluster:"

// BootstrapOperator is the operator --bootstrap makes.
const BootstrapOperator = "admin"
