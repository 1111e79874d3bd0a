package resources

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// FindCondition returns the condition of the given type, or nil.
func FindCondition(conds []*pb.Condition, typ string) *pb.Condition {
	for _, c := range conds {
		if c.GetType() == typ {
			return c
		}
	}
	return nil
}

// SetCondition returns conds with c set, Kubernetes style: a condition of
// the same type is replaced, but keeps its lastTransitionTime unless its
// status changes; a new type is appended. The caller supplies the time in
// c.LastTransitionTime. Neither conds nor c are modified, and the result
// shares no condition with c.
func SetCondition(conds []*pb.Condition, c *pb.Condition) []*pb.Condition {
	n := proto.Clone(c).(*pb.Condition)
	out := make([]*pb.Condition, len(conds), len(conds)+1)
	copy(out, conds)
	for i, old := range out {
		if old.GetType() != c.GetType() {
			continue
		}
		if old.GetStatus() == c.GetStatus() {
			n.LastTransitionTime = nil
			if t := old.GetLastTransitionTime(); t != nil {
				n.LastTransitionTime = proto.Clone(t).(*timestamppb.Timestamp)
			}
		}
		out[i] = n
		return out
	}
	return append(out, n)
}
