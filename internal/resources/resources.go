// Package resources holds the rules of the oneinfra resources (Cluster,
// Hypervisor, Component): their names, defaults, validation, CIDR and port
// helpers and conditions. It works on the protobuf messages of
// proto/oneinfra/v1 and has no state of its own.
package resources

import (
	"fmt"
	"strings"
	"time"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"

	"github.com/oneinfra/oneinfra/internal/version"
)

// APIVersion is the apiVersion of every oneinfra resource.
const APIVersion = "oneinfra.io/v1alpha1"

// Kinds of resources.
const (
	KindCluster    = "Cluster"
	KindHypervisor = "Hypervisor"
	KindComponent  = "Component"
)

// Normalised plural kind names, as used by the API (GetRequest.kind).
const (
	Clusters    = "clusters"
	Hypervisors = "hypervisors"
	Components  = "components"
)

// Cluster phases (status.phase).
const (
	PhasePending      = "Pending"
	PhaseProvisioning = "Provisioning"
	PhaseReady        = "Ready"
	PhaseDegraded     = "Degraded"
	PhaseDeleting     = "Deleting"
)

// Component roles (spec.role).
const (
	RoleControlPlane = "control-plane"
	RoleIngress      = "ingress"
)

// Hypervisor health values (status.health).
const (
	HealthAlive   = "alive"
	HealthSuspect = "suspect"
	HealthDead    = "dead"
)

// Condition status values.
const (
	ConditionTrue    = "True"
	ConditionFalse   = "False"
	ConditionUnknown = "Unknown"
)

// Cluster defaults.
const (
	DefaultReplicas    = 1
	MinReplicas        = 1
	MaxReplicas        = 7
	DefaultPodCIDR     = "10.244.0.0/16"
	DefaultServiceCIDR = "10.96.0.0/12"
)

// NormalizeKind maps the kind names the CLI accepts (plural, singular and
// short, any case) to "clusters", "hypervisors" or "components".
func NormalizeKind(s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "clusters", "cluster", "cl":
		return Clusters, nil
	case "hypervisors", "hypervisor", "hv":
		return Hypervisors, nil
	case "components", "component", "comp":
		return Components, nil
	}
	return "", fmt.Errorf("unknown resource kind %q: want clusters (cluster, cl), hypervisors (hypervisor, hv) or components (component, comp)", s)
}

// Backups: spec.backup's defaults (the coordinator enables them when it
// has a backup target) and bounds.
const (
	DefaultBackupSchedule = "6h"
	DefaultBackupRetain   = 8
	MinBackupSchedule     = time.Minute
	MaxBackupRetain       = 1000
)

// DefaultBackupSpec is spec.backup on a coordinator with a backup target.
func DefaultBackupSpec() *pb.BackupSpec {
	return &pb.BackupSpec{Enabled: true, Schedule: DefaultBackupSchedule, Retain: DefaultBackupRetain}
}

// DefaultCluster fills in the defaults of a cluster: apiVersion and kind,
// the newest supported Kubernetes version, one control-plane replica and the
// default pod and service CIDRs. It leaves spec.vpn.cidr alone: the
// coordinator picks it from its pool.
func DefaultCluster(c *pb.Cluster) {
	if c.ApiVersion == "" {
		c.ApiVersion = APIVersion
	}
	if c.Kind == "" {
		c.Kind = KindCluster
	}
	if c.Metadata == nil {
		c.Metadata = &pb.ObjectMeta{}
	}
	if c.Spec == nil {
		c.Spec = &pb.ClusterSpec{}
	}
	s := c.Spec
	if s.KubernetesVersion == "" {
		s.KubernetesVersion = version.DefaultKubernetesVersion()
	}
	if s.ControlPlane == nil {
		s.ControlPlane = &pb.ControlPlaneSpec{}
	}
	if s.ControlPlane.Replicas == nil {
		r := int32(DefaultReplicas)
		s.ControlPlane.Replicas = &r
	}
	if b := s.Backup; b != nil {
		if b.Schedule == "" {
			b.Schedule = DefaultBackupSchedule
		}
		if b.Retain == 0 {
			b.Retain = DefaultBackupRetain
		}
	}
	if s.Networking == nil {
		s.Networking = &pb.NetworkingSpec{}
	}
	if s.Networking.PodCidr == "" {
		s.Networking.PodCidr = DefaultPodCIDR
	}
	if s.Networking.ServiceCidr == "" {
		s.Networking.ServiceCidr = DefaultServiceCIDR
	}
}

// DefaultHypervisor fills in apiVersion and kind of a hypervisor. An empty
// spec.portRange is left empty: it means DefaultPortRange.
func DefaultHypervisor(h *pb.Hypervisor) {
	if h.ApiVersion == "" {
		h.ApiVersion = APIVersion
	}
	if h.Kind == "" {
		h.Kind = KindHypervisor
	}
	if h.Metadata == nil {
		h.Metadata = &pb.ObjectMeta{}
	}
	if h.Spec == nil {
		h.Spec = &pb.HypervisorSpec{}
	}
}

// TunnelAPIPort is where nodes reach their cluster's API through the VPN,
// at the endpoint's VPN address: the endpoint redirects it to the
// ingress's port, so the address stays when the ingress moves.
const TunnelAPIPort = 6443

// EgressProxyPort is where a cluster's API servers reach its nodes, pods
// and services, at its VPN endpoint's address (agent/egress).
const EgressProxyPort = 7446

// DefaultJoinPort is where a public hypervisor's agent serves the worker
// join endpoint.
const DefaultJoinPort = 7445
