package pki

import (
	"fmt"
	"maps"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// CA rotation (pb.CARotation) replaces every CA of a cluster in three
// stages. Each stage raises the cluster's trust_generation; the
// coordinator moves to the next one only once every component and node
// holds the current one, so that any two of them always trust each
// other's certificates:
//
//  1. Trusting: new CAs are made; components trust the old and the new
//     (Trust); leaves still come from the old.
//  2. Reissuing: the new CAs sign; every leaf is issued again from them
//     while the old are still trusted.
//  3. Dropping: only the new CAs are trusted.
//
// After stage 3 the rotation ends (the PKI has no rotation).
const (
	StageTrusting  = 1
	StageReissuing = 2
	StageDropping  = 3
)

// StageName says what a rotation stage does, for describe and events.
func StageName(stage uint32) string {
	switch stage {
	case StageTrusting:
		return "trusting the new CAs beside the old"
	case StageReissuing:
		return "issuing every certificate again from the new CAs"
	case StageDropping:
		return "dropping the old CAs"
	}
	return fmt.Sprintf("stage %d", stage)
}

// Trust is what a cluster's components trust now: a PEM bundle per CA
// name, of the CA and, during a rotation, the new one beside it (stage 1)
// or the old one (stage 2).
func Trust(p *pb.ClusterPKI) map[string][]byte {
	out := make(map[string][]byte, len(p.GetCas()))
	for name, ca := range p.GetCas() {
		out[name] = append([]byte{}, ca.GetCertPem()...)
	}
	for name, ca := range p.GetRotation().GetNext() {
		out[name] = append(out[name], ca.GetCertPem()...)
	}
	for name, cert := range p.GetRotation().GetPrevious() {
		out[name] = append(out[name], cert...)
	}
	return out
}

// StartRotation returns a copy of p with a rotation begun at now: a new
// CA for each of p's, trusted beside the old ones from the next trust
// generation on.
func StartRotation(p *pb.ClusterPKI, now time.Time) (*pb.ClusterPKI, error) {
	if p.GetRotation() != nil {
		return nil, fmt.Errorf("cluster %s: a CA rotation is under way (stage %d)", p.GetCluster(), p.Rotation.Stage)
	}
	out := proto.Clone(p).(*pb.ClusterPKI)
	out.TrustGeneration++
	out.Rotation = &pb.CARotation{Stage: StageTrusting, Next: map[string]*pb.KeyPair{},
		Started: timestamppb.New(now), StageSince: timestamppb.New(now)}
	for name := range p.GetCas() {
		// A name of its own, so that no verifier mistakes one CA for the
		// other.
		ca, err := tlsutil.NewCA(fmt.Sprintf("oneinfra-%s-%s-ca-%d", p.GetCluster(), name, out.TrustGeneration), CAValidity, now)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: new %s CA: %w", p.GetCluster(), name, err)
		}
		out.Rotation.Next[name] = ca
	}
	return out, nil
}

// NextStage returns a copy of p with its rotation moved on to the next
// stage at now, or ended after stage 3; p without a rotation is returned
// as it is.
func NextStage(p *pb.ClusterPKI, now time.Time) *pb.ClusterPKI {
	r := p.GetRotation()
	if r == nil {
		return p
	}
	out := proto.Clone(p).(*pb.ClusterPKI)
	switch r.Stage {
	case StageTrusting:
		out.Rotation.Previous = map[string][]byte{}
		for name, ca := range p.Cas {
			out.Rotation.Previous[name] = ca.GetCertPem()
		}
		out.Cas = maps.Clone(r.Next)
		out.Rotation.Next = nil
	case StageReissuing:
		out.Rotation.Previous = nil
	default:
		out.Rotation = nil
		return out
	}
	out.Rotation.Stage++
	out.Rotation.StageSince = timestamppb.New(now)
	out.TrustGeneration++
	return out
}
