package coordinator

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/renewal"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// trackedCert is one certificate the coordinator tracks: who holds it,
// which one it is, and when it expires.
type trackedCert struct {
	owner, name string
	notAfter    time.Time
}

// trackedCerts lists every certificate the coordinator tracks: its own
// CA; each cluster's CAs and the certificates its components use; and, of
// the certificates it signed for a key made elsewhere (servers, agents,
// workers, operators, kubeconfigs), the newest unrevoked one of each
// holder.
func trackedCerts(st *state.Store) []trackedCert {
	var out []trackedCert
	add := func(owner, name string, certPEM []byte) {
		if cert, err := tlsutil.ParseCertPEM(certPEM); err == nil {
			out = append(out, trackedCert{owner: owner, name: name, notAfter: cert.NotAfter})
		}
	}
	if ca := st.Config(nil).GetCa(); ca != nil {
		add("coordinator", "ca", ca.CertPem)
	}
	if next := st.Config(nil).GetRotation().GetNext(); next != nil {
		add("coordinator", "next-ca", next.CertPem) // a rotation's, before it signs
	}
	for _, c := range st.Clusters(nil) {
		p := st.ClusterPKI(nil, c.Metadata.Name)
		for _, name := range slices.Sorted(maps.Keys(p.GetCas())) {
			add("cluster/"+c.Metadata.Name, name, p.Cas[name].CertPem)
		}
		// A CA rotation's new CAs, before they sign.
		next := p.GetRotation().GetNext()
		for _, name := range slices.Sorted(maps.Keys(next)) {
			add("cluster/"+c.Metadata.Name, "next-"+name, next[name].CertPem)
		}
		for _, comp := range st.ComponentsOfCluster(nil, c.Metadata.Name) {
			certs := st.ComponentCerts(nil, comp.Metadata.Name).GetCerts()
			for _, name := range slices.Sorted(maps.Keys(certs)) {
				add("component/"+comp.Metadata.Name, name, certs[name].CertPem)
			}
		}
	}
	newest := map[string]int{}
	for _, rec := range st.AllIssued(nil) {
		if rec.Revoked {
			continue
		}
		role := strings.TrimPrefix(rec.Role, "oneinfra:")
		owner := role + "/" + rec.Name
		if rec.Cluster != "" {
			owner = role + "/" + rec.Cluster + "/" + rec.Name
		}
		notAfter := rec.NotAfter.AsTime()
		if i, ok := newest[owner]; ok {
			out[i].notAfter = maxTime(out[i].notAfter, notAfter)
			continue
		}
		newest[owner] = len(out)
		out = append(out, trackedCert{owner: owner, name: role, notAfter: notAfter})
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// certificateSummaries says, for describe, when each component's
// certificates expire first and what renewal is under way.
func certificateSummaries(st *state.Store, c *pb.Cluster, comps []*pb.Component, now time.Time) []*pb.CertificateSummary {
	d := newDueCheck(st.ClusterPKI(nil, c.Metadata.Name), now)
	var out []*pb.CertificateSummary
	for _, comp := range comps {
		certs := st.ComponentCerts(nil, comp.Metadata.Name)
		sum := &pb.CertificateSummary{Component: comp.Metadata.Name, Generation: certs.GetGeneration()}
		var soonest time.Time
		for _, name := range slices.Sorted(maps.Keys(certs.GetCerts())) {
			cert, err := tlsutil.ParseCertPEM(certs.Certs[name].CertPem)
			if err != nil {
				continue // dueCheck calls it due
			}
			if soonest.IsZero() || cert.NotAfter.Before(soonest) {
				soonest, sum.Soonest = cert.NotAfter, name
				sum.SoonestExpiry = timestamppb.New(cert.NotAfter)
				sum.RenewAt = timestamppb.New(renewal.At(cert.NotBefore, cert.NotAfter))
			}
		}
		_, due := d.soonest(certs.GetCerts())
		controlPlane := comp.Spec.Role == resources.RoleControlPlane
		switch {
		case comp.Metadata.DeletionTimestamp != nil:
		case renewing(certs) && !certs.Released:
			sum.Renewal = "new certificates issued; waiting for the ingress to stop sending it connections"
		case renewing(certs):
			sum.Renewal = fmt.Sprintf("restarting with generation %d", certs.Generation+1)
		case due && certs.GetRenewalGivenUp() != nil && now.Sub(certs.RenewalGivenUp.AsTime()) < time.Hour:
			sum.Renewal = "due: the last renewal was given up at " + certs.RenewalGivenUp.AsTime().UTC().Format(time.RFC3339) + " (see the events); tried again"
		case due && controlPlane && c.Spec.ControlPlane.GetReplicas() == 1:
			sum.Renewal = "due: a new replica takes over once it runs"
		case due && controlPlane:
			sum.Renewal = "due: waits its turn (one replica at a time, while every replica runs and is up in the ingress)"
		case due:
			sum.Renewal = "due"
		}
		out = append(out, sum)
	}
	return out
}
