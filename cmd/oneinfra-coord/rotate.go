package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oneinfra/oneinfra/coordinator"
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
			what := "cluster/" + args[0] + " CA rotation"
			fmt.Fprintf(cmd.OutOrStdout(), "%s begun: stage %d, %s\n", what, r.GetStage(), pki.StageName(r.GetStage()))
			if !wait {
				return nil
			}
			took, err := waitRotation(cmd, g, timeout, what, pki.StageName, func(ctx context.Context, s *session) (*pb.CARotationStatus, error) {
				d, err := s.op.Describe(ctx, &pb.DescribeRequest{Name: args[0]})
				return d.GetCaRotation(), err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s done in %s: fetch kubeconfigs again (`cluster kubeconfig %s`)\n", what, took.Round(time.Second), args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the old CAs are dropped")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long --wait waits")
	return cmd
}

// waitRotation follows a CA rotation until it ends (status answers nil),
// printing its steps.
func waitRotation(cmd *cobra.Command, g *globals, timeout time.Duration, what string, stageName func(uint32) string,
	status func(ctx context.Context, s *session) (*pb.CARotationStatus, error)) (time.Duration, error) {
	last, took, err := follow(cmd, g, timeout, func(ctx context.Context, s *session) (step, bool, error) {
		r, err := status(ctx, s)
		if err != nil {
			return step{}, false, err
		}
		return rotationStep(r, stageName), r == nil, nil
	})
	if errors.Is(err, errNotYet) {
		return took, errors.New(clip(fmt.Sprintf("%s not done after %s: %s", what, timeout, last.blocking()), maxLine))
	}
	return took, err
}

// rotationStep is where a CA rotation is: its stage, and the first of
// what it waits for.
func rotationStep(r *pb.CARotationStatus, stageName func(uint32) string) step {
	st := step{state: fmt.Sprintf("stage %d/3: %s", r.GetStage(), stageName(r.GetStage()))}
	if w := r.GetWaiting(); len(w) > 0 {
		st.waiting = fmt.Sprintf("waiting for %s", w[0])
		if len(w) > 1 {
			st.waiting += fmt.Sprintf(" and %d more", len(w)-1)
		}
	}
	return st
}

func newRotateCACommand(g *globals) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-ca [--wait] [--timeout D]",
		Short: "Replace the coordinator's own certificate authority, in stages, with no one locked out",
		Long: "Replace the coordinator CA, in three stages, each done once every holder of its certificates\n" +
			"moved: (1) a new CA is trusted beside the old by servers, agents and workers, (2) agents,\n" +
			"workers and operators take certificates of the new CA, (3) servers and join endpoints do;\n" +
			"then the old CA is dropped. Operators move when they run any command with their\n" +
			"credentials file (it is rewritten); stage 2 waits for each operator certificate still\n" +
			"valid, so run a command with each file (--wait does, with its own), or revoke it (`admin\n" +
			"revoke`). A hypervisor or node that does not report holds its stage until it comes back\n" +
			"or is removed. Join tokens made before stage 3 pin the old CA: make them again after it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r *pb.CARotationStatus
			err := g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.RotateCA(ctx, &pb.RotateCARequest{})
				r = resp.GetStatus().GetRotation()
				return err
			})
			if err != nil {
				return err
			}
			const what = "coordinator CA rotation"
			fmt.Fprintf(cmd.OutOrStdout(), "%s begun: stage %d, %s\n", what, r.GetStage(), coordinator.CAStageName(r.GetStage()))
			if !wait {
				return nil
			}
			var hash string
			took, err := waitRotation(cmd, g, timeout, what, coordinator.CAStageName, func(ctx context.Context, s *session) (*pb.CARotationStatus, error) {
				st, err := s.op.CAStatus(ctx, &pb.CAStatusRequest{})
				hash = st.GetCaHash()
				return st.GetRotation(), err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s done in %s: the coordinator CA is %s (join tokens give it as --ca-hash)\n", what, took.Round(time.Second), hash)
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the old CA is dropped")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long --wait waits")
	return cmd
}
