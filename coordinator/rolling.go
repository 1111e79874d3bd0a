package coordinator

import (
	"crypto/x509"
	"errors"
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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Cluster certificates renew themselves once due (internal/renewal), so
// that none ever expires:
//
//   - Control-plane replicas renew one at a time, in place. A replica is
//     chosen when one of its certificates is due and its cluster is
//     steady: the replicas it wants, all Running and up in every live
//     ingress (which must be Running), none being removed, replaced or
//     drained. A new set is issued beside the one in use
//     (ComponentCerts.renewed); the ingress's assignment leaves the replica
//     out, and once every ingress of the cluster (a dead one too: it may
//     still serve) has reported since, without it among its backends, the
//     release is recorded and the replica's assignment carries the new set
//     with the next generation. Its agent writes the files and restarts the
//     Kubernetes pod (the generation labels it); etcd reads its
//     certificates again on every connection and keeps running. When the
//     replica reports Running with that generation, the new set is the one
//     in use and the ingress takes the replica back; the next replica goes
//     once the ingress has it up. A renewal not done within
//     renewalDeadline is given up (Warning RenewalGivenUp: the replica
//     keeps its certificates and goes back to the ingress) and tried again
//     as long after. A due replica whose agent has not given the keys of
//     its next certificates waits, and the next one due goes. A due
//     replica that cannot start while a sixth of its certificate's life is
//     left gets a Warning RenewalBlocked.
//   - A cluster of one replica has no other API server to serve while its
//     own restarts: its replica is moved as in a drain instead (one placed
//     with new certificates, then the old one removed).
//   - Ingress certificates are issued again in place: the agent writes the
//     files and reloads haproxy, which drops no connection.
//
// A certificate that ends with the CA that issued it cannot be extended
// by a renewal (only a new CA can): it is never due, so that nothing
// renews in a loop.

// Why a single replica leaves for certificates: they are due, or a CA
// rotation issues them again.
const (
	reasonCertsDue   = "certificates due"
	reasonCARotation = "CA rotation"
)

// renewalDeadline is how long a replica's renewal may take before it is
// given up: a twelfth of the certificates' life, between 1 and 15 minutes.
func renewalDeadline(validity time.Duration) time.Duration {
	return min(max(validity/12, time.Minute), 15*time.Minute)
}

// dueCheck decides at now which certificates of a cluster are due.
type dueCheck struct {
	now time.Time
	// caEnd is when the cluster's first CA expires: a certificate that
	// ends then cannot be extended.
	caEnd time.Time
}

func newDueCheck(p *pb.ClusterPKI, now time.Time) dueCheck {
	d := dueCheck{now: now}
	for _, ca := range p.GetCas() {
		if cert, err := tlsutil.ParseCertPEM(ca.GetCertPem()); err == nil && (d.caEnd.IsZero() || cert.NotAfter.Before(d.caEnd)) {
			d.caEnd = cert.NotAfter
		}
	}
	return d
}

// soonest is the certificate of certs that expires first (nil if none can
// be read), and whether any of them is due (one that cannot be read is).
func (d dueCheck) soonest(certs map[string]*pb.KeyPair) (*x509.Certificate, bool) {
	var first *x509.Certificate
	due := false
	for _, kp := range certs {
		cert, err := tlsutil.ParseCertPEM(kp.GetCertPem())
		if err != nil {
			due = true
			continue
		}
		if first == nil || cert.NotAfter.Before(first.NotAfter) {
			first = cert
		}
		extendable := d.caEnd.IsZero() || cert.NotAfter.Before(d.caEnd.Add(-time.Minute))
		due = due || (extendable && renewal.Due(cert, d.now))
	}
	return first, due
}

// expiry is when cert expires, in events.
func expiry(cert *x509.Certificate) string {
	if cert == nil {
		return "never (unreadable)"
	}
	return cert.NotAfter.UTC().Format(time.RFC3339)
}

// renewing reports whether a replica has a new set of certificates it
// does not run yet.
func renewing(certs *pb.ComponentCerts) bool { return len(certs.GetRenewed()) > 0 }

// runningCerts is the set of certificates a replica's assignment carries
// (with what it trusts and their generations): the renewed set once its
// release from the ingress is recorded, the one in use until then.
func runningCerts(certs *pb.ComponentCerts) *pb.ComponentCerts {
	if renewing(certs) && certs.Released {
		return &pb.ComponentCerts{Component: certs.Component, Certs: certs.Renewed, Generation: certs.Generation + 1,
			Trust: certs.RenewedTrust, TrustGeneration: certs.RenewedTrustGeneration}
	}
	return certs
}

// trustOf is what a component trusts with a set of certificates: the
// set's bundles, or the cluster's CAs for a set issued before CA rotation
// (which is then at trust generation 0, and no rotation has begun).
func trustOf(p *pb.ClusterPKI, trust map[string][]byte) map[string][]byte {
	if len(trust) > 0 {
		return trust
	}
	out := make(map[string][]byte, len(p.GetCas()))
	for name, ca := range p.GetCas() {
		out[name] = ca.GetCertPem()
	}
	return out
}

// trustStale reports whether a set of certificates was issued at an older
// trust generation than the cluster's: a CA rotation has moved on since,
// and the set is issued again.
func trustStale(p *pb.ClusterPKI, certs *pb.ComponentCerts) bool {
	return len(certs.GetCerts()) > 0 && certs.GetTrustGeneration() < p.GetTrustGeneration()
}

// releasedBy reports whether every ingress of ingresses has reported
// (its hypervisor seen) since a renewal began at since, and says that its
// haproxy does not send the replica name new connections.
func releasedBy(ingresses []*pb.Component, hypervisors []*pb.Hypervisor, name string, since time.Time) bool {
	for _, in := range ingresses {
		seen := hypervisorByName(hypervisors, in.Spec.Hypervisor).GetStatus().GetLastSeen()
		if seen == nil || !seen.AsTime().After(since) || slices.Contains(in.GetStatus().GetBackends(), name) {
			return false
		}
	}
	return true
}

// withServing is certs with the API server's serving certificate issued
// again by reissue, for its own key, in the set in use and in a renewed
// one.
func withServing(certs *pb.ComponentCerts, reissue func(*pb.KeyPair) (*pb.KeyPair, error)) (*pb.ComponentCerts, error) {
	out := proto.Clone(certs).(*pb.ComponentCerts)
	for _, set := range []map[string]*pb.KeyPair{out.Certs, out.Renewed} {
		if kp := set[vocab.APIServerCert]; kp != nil {
			fresh, err := reissue(kp)
			if err != nil {
				return nil, err
			}
			set[vocab.APIServerCert] = fresh
		}
	}
	return out, nil
}

// certsDueMove is the leaving reason of a replica moved rather than
// restarted for its certificates: a single one whose certificates are
// due, or one of one or two that a CA rotation issues again; else "".
func certsDueMove(st *state.Store, c *pb.Cluster, p *pb.ClusterPKI, d dueCheck, comp *pb.Component) string {
	certs := st.ComponentCerts(nil, comp.Metadata.Name)
	switch replicas := c.Spec.ControlPlane.GetReplicas(); {
	case replicas == 1 && renewalDue(d, certs):
		return reasonCertsDue
	case rotatesByMoving(replicas) && trustStale(p, certs):
		return reasonCARotation
	}
	return ""
}

// renewalDue reports whether a set's certificates are due.
func renewalDue(d dueCheck, certs *pb.ComponentCerts) bool {
	_, due := d.soonest(certs.GetCerts())
	return due
}

// rotatesByMoving reports whether a cluster of replicas takes a CA
// rotation's stages by moving its replicas rather than restarting them:
// each stage restarts etcd, which one of one or two members cannot do
// and keep a quorum.
func rotatesByMoving(replicas int32) bool { return replicas <= 2 }

// roller takes the rolling renewal of one cluster's control-plane
// certificates a step.
type roller struct {
	st       *state.Store
	cluster  *pb.Cluster
	pki      *pb.ClusterPKI
	due      dueCheck
	deadline time.Duration
	// ingresses are all of the cluster's, on dead hypervisors too.
	ingresses   []*pb.Component
	hypervisors []*pb.Hypervisor
	issue       func(*pb.Component) (*pb.ComponentCerts, error)
	cmd         *pb.PlaceCommand
}

// event adds an event of the cluster to the command.
func (r *roller) event(typ, reason, msg string) {
	r.cmd.Events = append(r.cmd.Events, state.Event(r.cluster.Metadata.Name, typ, reason, msg, r.due.now))
}

// roll advances the renewal under way, if any (release recorded, renewed
// set in use, or given up past its deadline); with none under way and
// the cluster steady, it starts one for the replica due first. have are
// the live replicas; those whose certificates cmd already holds are left
// for the next round.
func (r *roller) roll(have []*pb.Component, steady bool) error {
	issued := func(name string) bool {
		return slices.ContainsFunc(r.cmd.Certs, func(cc *pb.ComponentCerts) bool { return cc.Component == name })
	}
	now := r.due.now
	inFlight := false
	for _, comp := range have {
		name := comp.Metadata.Name
		certs := r.st.ComponentCerts(nil, name)
		if !renewing(certs) {
			continue
		}
		inFlight = true
		if issued(name) {
			continue
		}
		next := proto.Clone(certs).(*pb.ComponentCerts)
		s := comp.GetStatus()
		switch {
		case certs.Released && s.GetState() == vocab.StateRunning && s.GetCertGeneration() == certs.Generation+1:
			first, _ := r.due.soonest(certs.Renewed)
			r.cmd.Certs = append(r.cmd.Certs, runningCerts(certs))
			r.event("Normal", "CertificatesRenewed", fmt.Sprintf("%s runs its renewed certificates (valid until %s)", name, expiry(first)))
		case now.Sub(certs.GetRenewingSince().AsTime()) > r.deadline:
			why := "the ingress did not stop sending it connections"
			if certs.Released {
				why = fmt.Sprintf("it did not come back Running with generation %d", certs.Generation+1)
			}
			next.Renewed, next.RenewedTrust, next.RenewedTrustGeneration = nil, nil, 0
			next.Released, next.RenewingSince, next.RenewalGivenUp = false, nil, timestamppb.New(now)
			r.cmd.Certs = append(r.cmd.Certs, next)
			r.event("Warning", "RenewalGivenUp", fmt.Sprintf("renewing the certificates of %s took over %s (%s): it keeps its certificates and goes back to the ingress; tried again in %s", name, r.deadline, why, r.deadline))
		case !certs.Released && releasedBy(r.ingresses, r.hypervisors, name, certs.GetRenewingSince().AsTime()):
			next.Released = true
			r.cmd.Certs = append(r.cmd.Certs, next)
		}
	}
	if inFlight || r.cluster.Spec.ControlPlane.GetReplicas() == 1 {
		return nil
	}
	type candidate struct {
		comp  *pb.Component
		first *x509.Certificate
	}
	var due []candidate
	for _, comp := range have {
		certs := r.st.ComponentCerts(nil, comp.Metadata.Name)
		first, isDue := r.due.soonest(certs.GetCerts())
		isDue = isDue || (trustStale(r.pki, certs) && !rotatesByMoving(r.cluster.Spec.ControlPlane.GetReplicas()))
		if !isDue || issued(comp.Metadata.Name) || (certs.GetRenewalGivenUp() != nil && now.Sub(certs.RenewalGivenUp.AsTime()) < r.deadline) {
			continue
		}
		due = append(due, candidate{comp, first})
	}
	// The one expiring first goes first (an unreadable one last, as its
	// expiry is unknown); the order is stable for replicas that tie.
	slices.SortStableFunc(due, func(a, b candidate) int {
		switch {
		case a.first == nil && b.first == nil:
			return 0
		case a.first == nil:
			return 1
		case b.first == nil:
			return -1
		}
		return a.first.NotAfter.Compare(b.first.NotAfter)
	})
	if len(due) == 0 {
		return nil
	}
	if !steady {
		r.warnBlocked(due[0].comp, due[0].first, "the cluster is steady: every replica Running and up in the ingress, none being removed, replaced or drained")
		return nil
	}
	// A replica whose agent has not given its next keys waits, and the
	// next one due goes: one agent cannot hold back the others' renewals.
	for _, c := range due {
		fresh, err := r.issue(c.comp)
		if errors.Is(err, pki.ErrNoKeys) {
			r.warnBlocked(c.comp, c.first, fmt.Sprintf("the agent of hypervisor %s gives the keys of its next ones", c.comp.Spec.Hypervisor))
			continue
		}
		if err != nil {
			return err
		}
		r.start(c.comp, c.first, fresh)
		return nil
	}
	return nil
}

// start records the renewal of a replica's certificates to fresh: issued
// beside the set in use, which it keeps until the ingress has released it.
func (r *roller) start(comp *pb.Component, first *x509.Certificate, fresh *pb.ComponentCerts) {
	name := comp.Metadata.Name
	old := r.st.ComponentCerts(nil, name)
	r.cmd.Certs = append(r.cmd.Certs, &pb.ComponentCerts{Component: name, Certs: old.GetCerts(), Generation: old.GetGeneration(),
		Trust: old.GetTrust(), TrustGeneration: old.GetTrustGeneration(),
		Renewed: fresh.Certs, RenewedTrust: fresh.Trust, RenewedTrustGeneration: fresh.TrustGeneration, RenewingSince: timestamppb.New(r.due.now)})
	why := fmt.Sprintf("the soonest expires %s", expiry(first))
	if trustStale(r.pki, old) {
		why = "CA rotation: " + pki.StageName(r.pki.GetRotation().GetStage())
	}
	r.event("Normal", "RenewingCertificates", fmt.Sprintf("renewing the certificates of %s (%s): the ingress stops sending it connections, then it restarts with new ones", name, why))
}

// warnBlocked adds, once per expiry and cause, a Warning when a due
// replica cannot start renewing until something happens (until) and less
// than a sixth of its soonest certificate's life is left.
func (r *roller) warnBlocked(comp *pb.Component, first *x509.Certificate, until string) {
	if first == nil {
		return
	}
	life := first.NotAfter.Sub(renewal.Issued(first.NotBefore, first.NotAfter))
	if first.NotAfter.Sub(r.due.now) > life/6 {
		return
	}
	msg := fmt.Sprintf("the certificates of %s expire at %s and cannot renew until %s", comp.Metadata.Name, expiry(first), until)
	if !hasEventMessage(r.st.Events(nil, r.cluster.Metadata.Name), "RenewalBlocked", msg) {
		r.event("Warning", "RenewalBlocked", msg)
	}
}

// renewIngressCerts issues the certificates of a cluster's ingress, for
// the keys its agent gave: the first ones (or one it lacks), and again
// when one is due or when a CA rotation moved on and the control plane
// holds its stage (cpHolds); haproxy reloads them (and the CAs it
// trusts) without dropping a connection. vpnAddresses are the VPN
// endpoint's.
func renewIngressCerts(st *state.Store, p *pb.ClusterPKI, d dueCheck, ingresses []*pb.Component, cpHolds bool, vpnAddresses []string, validity time.Duration, cmd *pb.PlaceCommand) error {
	for _, comp := range ingresses {
		if comp.Metadata.DeletionTimestamp != nil {
			continue
		}
		old := st.ComponentCerts(nil, comp.Metadata.Name)
		first := slices.ContainsFunc(pki.KeyNames(resources.RoleIngress), func(name string) bool { return old.GetCerts()[name] == nil })
		if !first && !renewalDue(d, old) && !(cpHolds && trustStale(p, old)) {
			continue
		}
		certs, err := pki.IngressCerts(p, comp.Metadata.Name, vpnAddresses, old.GetSpareKeys(), validity, d.now)
		if errors.Is(err, pki.ErrNoKeys) {
			continue // its agent gives the next keys soon
		}
		if err != nil {
			return fmt.Errorf("issuing the certificates of %s: %w", comp.Metadata.Name, err)
		}
		cmd.Certs = append(cmd.Certs, certs)
		if first {
			continue
		}
		soonest, _ := d.soonest(certs.Certs)
		cmd.Events = append(cmd.Events, state.Event(comp.Spec.Cluster, "Normal", "CertificatesRenewed",
			fmt.Sprintf("%s %s has new certificates (valid until %s)", resources.RoleIngress, comp.Metadata.Name, expiry(soonest)), d.now))
	}
	return nil
}
