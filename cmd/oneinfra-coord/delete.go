package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func newDeleteCommand(g *globals) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "delete KIND NAME [--wait]",
		Short: "Delete a cluster (its components are removed from their hypervisors), an empty hypervisor, or an orphaned component (with its data)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := resources.NormalizeKind(args[0])
			if err != nil {
				return err
			}
			var resp *pb.DeleteResponse
			err = g.call(cmd, func(ctx context.Context, s *session) (err error) {
				resp, err = s.op.Delete(ctx, &pb.DeleteRequest{Kind: kind, Name: args[1]})
				return err
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			label := singular(kind) + "/" + args[1]
			if resp.Deleted {
				fmt.Fprintf(out, "%s deleted\n", label)
				return nil
			}
			if kind == resources.Components {
				fmt.Fprintf(out, "%s deleting: its agent removes it with its files\n", label)
			} else {
				fmt.Fprintf(out, "%s deleting: its components are being removed from their hypervisors\n", label)
			}
			if !wait {
				return nil
			}
			last, _, err := follow(cmd, g, timeout, func(ctx context.Context, s *session) (step, bool, error) {
				left, err := componentsLeft(ctx, s.op, kind, args[1])
				if status.Code(err) == codes.NotFound {
					return step{}, true, nil
				}
				return step{state: fmt.Sprintf("%d component(s) left", left)}, false, err
			})
			if errors.Is(err, errNotYet) {
				return fmt.Errorf("%s still deleting after %s: %s not yet removed by their agents", label, timeout, last.blocking())
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s deleted\n", label)
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the cluster or component is gone")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long --wait waits")
	return cmd
}

// componentsLeft counts the components of a cluster, or the component,
// being deleted; NotFound once it is gone.
func componentsLeft(ctx context.Context, op pb.OperatorClient, kind, name string) (int, error) {
	if kind == resources.Components {
		resp, err := op.Get(ctx, &pb.GetRequest{Kind: kind, Name: name})
		return len(resp.GetComponents()), err
	}
	d, err := op.Describe(ctx, &pb.DescribeRequest{Name: name})
	return len(d.GetComponents()), err
}

func singular(kind string) string { return kind[:len(kind)-1] }
