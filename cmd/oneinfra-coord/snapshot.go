package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/oneinfra/oneinfra/coordinator"
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
				stream, err := s.op.SnapshotSave(ctx, &pb.SnapshotSaveRequest{})
				if err != nil {
					return err
				}
				var data []byte
				for {
					chunk, err := stream.Recv()
					if err == io.EOF {
						break
					}
					if err != nil {
						return err
					}
					data = append(data, chunk.Data...)
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
		Long: "Replace the coordinator's clusters, hypervisors, components and tokens with FILE's.\n" +
			"A snapshot of another coordinator is refused unless --force; it opens only on servers\n" +
			"holding that coordinator's keyring (DATA-DIR/keyring).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				stream, err := s.op.SnapshotRestore(ctx)
				if err != nil {
					return err
				}
				if err := coordinator.SendChunks(data, force, stream.Send); err != nil {
					return err
				}
				resp, err := stream.CloseAndRecv()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s restored at index %d\n", args[0], resp.Index)
				return nil
			})
		},
	}
	restore.Flags().BoolVar(&force, "force", false, "restore a snapshot of another coordinator")
	cmd.AddCommand(save, restore)
	return cmd
}
