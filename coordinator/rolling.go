package coordinator

import (
	"fmt"
	"slices"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/renewal"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// Cluster certificates renew themselves once due (internal/renewal), so
// that none ever expires:
//
//   - Control-plane replicas renew one at a time, in place. A replica is
//     chosen when one of its certificates is due and its cluster is
//     steady: the replicas it wants, all Running and up in every running
//     ingress, none being removed, replaced or drained. A new set is issued
//     beside the one in use (ComponentCerts.renewed); the ingress's
//     assignment leaves the replica out, and once every live ingress says
//     it sends the replica no new connections the replica's assignment
//     carries the new set with the next generation. Its agent writes the
//     files and restarts the Kubernetes pod (the generation labels it); etcd
//     reads its certificates again on every connection and keeps running.
//     When the replica reports Running with that generation, the new set is
//     the one in use and the ingress takes the replica back; the next
//     replica goes once the ingress has it up.
//   - A cluster of one replica has no other API server to serve while its
//     own restarts: its replica is moved as in a drain instead (one placed
//     with new certificates, then the old one removed).
//   - Ingress certificates are issued again in place: the agent writes the
//     files and reloads haproxy, which drops no connection.

// reasonCertsDue is why a replica leaves: its certificates are due.
const reasonCertsDue = "certificates due"

// certsSoonest is the soonest expiry among certs, and whether any of them
// is due for renewal at now (one that cannot be read is).
func certsSoonest(certs map[string]*pb.KeyPair, now time.Time) (time.Time, bool) {
	var soonest time.Time
	due := false
	for _, kp := range certs {
		cert, err := tlsutil.ParseCertPEM(kp.GetCertPem())
		if err != nil {
			due = true
			continue
		}
		if soonest.IsZero() || cert.NotAfter.Before(soonest) {
			soonest = cert.NotAfter
		}
		due = due || renewal.Due(cert, now)
	}
	return soonest, due
}

// renewing reports whether a replica has a new set of certificates it
// does not run yet.
func renewing(certs *pb.ComponentCerts) bool { return len(certs.GetRenewed()) > 0 }

// runningCerts is the set of certificates a replica's assignment carries,
// and its generation: the renewed set once no ingress sends the replica
// connections, the one in use until then.
func runningCerts(certs *pb.ComponentCerts, released bool) (map[string]*pb.KeyPair, uint64) {
	if renewing(certs) && released {
		return certs.Renewed, certs.Generation + 1
	}
	return certs.GetCerts(), certs.GetGeneration()
}

// certsDueMove is the leaving reason of a single replica whose
// certificates are due (it is moved rather than restarted), or "".
func certsDueMove(st *state.Store, c *pb.Cluster, comp *pb.Component, now time.Time) string {
	if c.Spec.ControlPlane.GetReplicas() != 1 {
		return ""
	}
	if _, due := certsSoonest(st.ComponentCerts(nil, comp.Metadata.Name).GetCerts(), now); due {
		return reasonCertsDue
	}
	return ""
}

// rollCerts takes the rolling renewal of a cluster's control-plane
// certificates one step, adding to cmd: a replica that runs its renewed
// set makes it the one in use; with none renewing, the steady cluster's
// replica due first gets a new set. have are the live replicas, steady
// whether the cluster may start one; replicas whose certificates cmd
// already holds are left alone.
func rollCerts(st *state.Store, c *pb.Cluster, have []*pb.Component, steady bool, issue func(*pb.Component) (*pb.ComponentCerts, error), cmd *pb.PlaceCommand, now time.Time) error {
	issued := func(name string) bool {
		return slices.ContainsFunc(cmd.Certs, func(cc *pb.ComponentCerts) bool { return cc.Component == name })
	}
	inFlight := false
	for _, comp := range have {
		certs := st.ComponentCerts(nil, comp.Metadata.Name)
		if !renewing(certs) || issued(comp.Metadata.Name) {
			continue
		}
		inFlight = true
		if s := comp.GetStatus(); s.GetState() != vocab.StateRunning || s.GetCertGeneration() != certs.Generation+1 {
			continue
		}
		cmd.Certs = append(cmd.Certs, &pb.ComponentCerts{Component: comp.Metadata.Name, Certs: certs.Renewed, Generation: certs.Generation + 1})
		soonest, _ := certsSoonest(certs.Renewed, now)
		cmd.Events = append(cmd.Events, state.Event(c.Metadata.Name, "Normal", "CertificatesRenewed",
			fmt.Sprintf("%s runs its renewed certificates (valid until %s)", comp.Metadata.Name, soonest.UTC().Format(time.RFC3339)), now))
	}
	if inFlight || !steady || c.Spec.ControlPlane.GetReplicas() == 1 {
		return nil
	}
	var next *pb.Component
	var nextExpiry time.Time
	for _, comp := range have {
		soonest, due := certsSoonest(st.ComponentCerts(nil, comp.Metadata.Name).GetCerts(), now)
		if due && !issued(comp.Metadata.Name) && (next == nil || soonest.Before(nextExpiry)) {
			next, nextExpiry = comp, soonest
		}
	}
	if next == nil {
		return nil
	}
	fresh, err := issue(next)
	if err != nil {
		return err
	}
	old := st.ComponentCerts(nil, next.Metadata.Name)
	cmd.Certs = append(cmd.Certs, &pb.ComponentCerts{Component: next.Metadata.Name, Certs: old.GetCerts(), Generation: old.GetGeneration(), Renewed: fresh.Certs})
	cmd.Events = append(cmd.Events, state.Event(c.Metadata.Name, "Normal", "RenewingCertificates",
		fmt.Sprintf("renewing the certificates of %s (the soonest expires %s): the ingress stops sending it connections, then it restarts with new ones", next.Metadata.Name, nextExpiry.UTC().Format(time.RFC3339)), now))
	return nil
}

// renewIngressCerts issues the certificates of a cluster's ingress again
// when one is due; haproxy reloads them without dropping a connection.
func renewIngressCerts(st *state.Store, p *pb.ClusterPKI, ingresses []*pb.Component, validity time.Duration, cmd *pb.PlaceCommand, now time.Time) error {
	for _, comp := range ingresses {
		if comp.Metadata.DeletionTimestamp != nil {
			continue
		}
		if _, due := certsSoonest(st.ComponentCerts(nil, comp.Metadata.Name).GetCerts(), now); !due {
			continue
		}
		certs, err := pki.IngressCerts(p, comp.Metadata.Name, validity, now)
		if err != nil {
			return fmt.Errorf("renewing the certificates of %s: %w", comp.Metadata.Name, err)
		}
		cmd.Certs = append(cmd.Certs, certs)
		soonest, _ := certsSoonest(certs.Certs, now)
		cmd.Events = append(cmd.Events, state.Event(comp.Spec.Cluster, "Normal", "CertificatesRenewed",
			fmt.Sprintf("%s %s has new certificates (valid until %s)", resources.RoleIngress, comp.Metadata.Name, soonest.UTC().Format(time.RFC3339)), now))
	}
	return nil
}
