package main

import (
	"context"
	"fmt"
	"os"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newSnapshotCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Save and restore the coordinator state (disaster recovery)"}
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent copy of the coordinator state to FILE, sealed with the coordinator's keyring (mode 0600)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, s *session) error {
				data, err := client.SaveSnapshot(ctx, s.op)
				if err != nil {
					return err
				}
				if err := tlsutil.WriteFileAtomic(args[0], data, 0o600); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "snapshot saved to %s (%d bytes)\n", args[0], len(data))
				return nil
			})
		},
	}
	var force bool
	restore := &cobra.Command{
		Use:   "restore FILE [--force]",
		Short: "Replace the coordinator's clusters, hypervisors, components and tokens with FILE's",
		Long: "Replace the coordinator's clusters, hypervisors, components and tokens with FILE's,\n" +
			"saying first what changes. What the snapshot cannot know of stays: the hypervisors\n" +
			"registered now, revocations, and tenant data: a component the snapshot lacks is stopped\n" +
			"with its data kept (Orphaned in `get components`) until `delete component NAME`.\n" +
			"A snapshot of another coordinator is refused unless --force; it opens only on servers\n" +
			"holding that coordinator's keyring (DATA-DIR/keyring).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				// What it changes first, then the restore.
				plan, err := client.RestoreSnapshot(ctx, s.op, data, &pb.SnapshotChunk{Force: force, DryRun: true})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "restoring %s:\n", args[0])
				for _, c := range plan.Changes {
					fmt.Fprintf(out, "  - %s\n", c)
				}
				resp, err := client.RestoreSnapshot(ctx, s.op, data, &pb.SnapshotChunk{Force: force})
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "snapshot %s restored at index %d\n", args[0], resp.Index)
				return nil
			})
		},
	}
	restore.Flags().BoolVar(&force, "force", false, "restore a snapshot of another coordinator")
	cmd.AddCommand(save, restore)
	return cmd
}
