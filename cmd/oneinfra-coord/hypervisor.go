package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newHypervisorCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "hypervisor", Aliases: []string{"hv"}, Short: "Cordon, drain and uncordon hypervisors"}
	set := func(name string, unschedulable, drain bool, cmd *cobra.Command) error {
		return g.call(cmd, func(ctx context.Context, s *session) error {
			_, err := s.op.SetScheduling(ctx, &pb.SetSchedulingRequest{Name: name, Unschedulable: unschedulable, Drain: drain})
			return err
		})
	}
	// cordon and uncordon set unschedulable and end any drain.
	toggle := func(verb, short string, unschedulable bool) *cobra.Command {
		return &cobra.Command{
			Use:   verb + " NAME",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := set(args[0], unschedulable, false, cmd); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "hypervisor/%s %sed\n", args[0], verb)
				return nil
			},
		}
	}
	cordon := toggle("cordon", "Place nothing new on a hypervisor (what runs there stays; a drain in progress stops)", true)
	uncordon := toggle("uncordon", "Make a cordoned or drained hypervisor schedulable again", false)
	var wait bool
	var timeout time.Duration
	drain := &cobra.Command{
		Use:   "drain NAME [--wait] [--timeout D]",
		Short: "Cordon a hypervisor and move its components elsewhere, one at a time per cluster",
		Long: "Cordon a hypervisor and move its components elsewhere while it still runs them: a control-plane " +
			"replica is removed only once its replacement runs, an ingress moves to another public hypervisor. " +
			"With --wait, show progress and return when nothing is left on it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout: must be positive, got %s", timeout)
			}
			if err := set(args[0], true, true, cmd); err != nil {
				return err
			}
			if !wait {
				fmt.Fprintf(cmd.OutOrStdout(), "hypervisor/%s draining\n", args[0])
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "hypervisor/%s draining (details: oneinfra-coord describe hypervisor %s)\n", args[0], args[0])
			return waitDrained(cmd, g, args[0], timeout)
		},
	}
	drain.Flags().BoolVar(&wait, "wait", false, "show progress and return when the hypervisor runs nothing")
	drain.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "how long --wait waits")
	cmd.AddCommand(cordon, uncordon, drain)
	return cmd
}

// waitDrained follows a draining hypervisor until no component is placed
// on it, printing a short line whenever what is left or what the drain
// waits for changes.
func waitDrained(cmd *cobra.Command, g *globals, name string, timeout time.Duration) error {
	last, took, err := follow(cmd, g, timeout, func(ctx context.Context, s *session) (step, bool, error) {
		resp, err := s.op.Get(ctx, &pb.GetRequest{Kind: "components"})
		if err != nil {
			return step{}, false, err
		}
		st, done := drainStep(name, resp.Components)
		return st, done, nil
	})
	if errors.Is(err, errNotYet) {
		return errors.New(clip(fmt.Sprintf("hypervisor/%s not drained after %s: %s", name, timeout, last.blocking()), maxLine))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "hypervisor/%s drained in %s\n", name, took.Round(time.Second))
	return nil
}
