package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newClusterRotateCACommand(g *globals) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-ca NAME [--wait] [--timeout D]",
		Short: "Replace a cluster's certificate authorities, in stages, with the cluster Ready throughout",
		Long: "Replace every certificate authority of a cluster, in three stages, each done once every\n" +
			"replica, the ingress and every worker runs with it: (1) the new CAs are trusted beside the\n" +
			"old, (2) every certificate is issued again from the new ones, kubelets' too, (3) the old\n" +
			"ones are dropped. Replicas restart one at a time, out of the ingress, as in a renewal\n" +
			"(clusters of one or two replicas move them instead). Kubeconfigs issued before the\n" +
			"rotation stop working during stage 2: fetch them again once it has begun (`cluster\n" +
			"kubeconfig`). Pods that read the cluster CA only at start (kube-root-ca.crt) must start\n" +
			"again between stages 1 and 2; oneinfra restarts the add-ons it runs at each stage.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *pb.CARotationStatus
			err := g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.RotateClusterCA(ctx, &pb.RotateClusterCARequest{Cluster: args[0]})
				r = resp.GetRotation()
				return err
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "cluster/%s CA rotation begun: stage %d, %s\n", args[0], r.GetStage(), pki.StageName(r.GetStage()))
			if !wait {
				return nil
			}
			last, took, err := follow(cmd, g, timeout, func(ctx context.Context, s *session) (step, bool, error) {
				d, err := s.op.Describe(ctx, &pb.DescribeRequest{Name: args[0]})
				if err != nil {
					return step{}, false, err
				}
				return rotationStep(d.GetCaRotation()), d.GetCaRotation() == nil, nil
			})
			if errors.Is(err, errNotYet) {
				return errors.New(clip(fmt.Sprintf("cluster/%s CA rotation not done after %s: %s", args[0], timeout, last.blocking()), maxLine))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "cluster/%s CA rotation done in %s: fetch kubeconfigs again (`cluster kubeconfig %s`)\n", args[0], took.Round(time.Second), args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the old CAs are dropped")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long --wait waits")
	return cmd
}

// rotationStep is where a CA rotation is: its stage, and the first of
// what it waits for.
func rotationStep(r *pb.CARotationStatus) step {
	st := step{state: fmt.Sprintf("stage %d/3: %s", r.GetStage(), pki.StageName(r.GetStage()))}
	if w := r.GetWaiting(); len(w) > 0 {
		st.waiting = fmt.Sprintf("waiting for %s", w[0])
		if len(w) > 1 {
			st.waiting += fmt.Sprintf(" and %d more", len(w)-1)
		}
	}
	return st
}
