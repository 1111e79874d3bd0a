// Package scheduler decides where the components of a cluster run and what
// they are given there. It owns:
//
//   - placement: which private hypervisor gets each control-plane replica and
//     which public hypervisor gets the ingress;
//   - host ports, taken from a hypervisor's port range, never handed out
//     twice on one hypervisor;
//   - VPN blocks carved from the coordinator's pool, and VPN addresses inside
//     a cluster's block;
//   - component names.
//
// Every function is pure: it reads only its arguments (never the clock, the
// network or a random source), does not modify them, and gives the same
// answer for the same input. Ties are broken by name. The coordinator calls
// these functions before it proposes a Raft log entry, so the FSM only ever
// records decisions that were already made.
//
// Errors callers branch on are sentinels, matched with errors.Is; the
// wrapping message says what a person can do about it.
package scheduler

import "errors"

// Sentinel errors.
var (
	// ErrNoPrivateHypervisor: no private hypervisor may take a control-plane
	// replica (none registered, or all unschedulable, dead, suspect or being
	// deleted).
	ErrNoPrivateHypervisor = errors.New("no schedulable private hypervisor is registered")
	// ErrNoPublicHypervisor: no public hypervisor may take an ingress.
	ErrNoPublicHypervisor = errors.New("no schedulable public hypervisor is registered")
	// ErrNoPorts: the port ranges of the eligible hypervisors are used up.
	ErrNoPorts = errors.New("no free host ports")
	// ErrInvalidPortRange: a port range is not "LOW-HIGH" within 1-65535.
	ErrInvalidPortRange = errors.New("invalid port range")
	// ErrVPNPoolExhausted: the VPN pool has no free block of the asked size.
	ErrVPNPoolExhausted = errors.New("VPN pool exhausted")
	// ErrCIDRFull: a VPN block has no free host address left.
	ErrCIDRFull = errors.New("no free address in CIDR")
)
