package main

import (
	"context"
	"fmt"

	"github.com/oneinfra/oneinfra/internal/manifest"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newApplyCommand(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update resources from YAML manifests",
		Long: "Create or update resources from YAML manifests (several documents split by ---).\n" +
			"Every document is checked before any is written: one bad document changes nothing.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f: required (a file, a directory or - for stdin)")
			}
			resources, err := manifest.ReadSources(files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			return applyResources(cmd, g, &pb.ApplyRequest{Resources: resources})
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory of manifests, or - for stdin (repeatable)")
	return cmd
}

// applyResources sends resources to the coordinator and prints what it did.
func applyResources(cmd *cobra.Command, g *globals, req *pb.ApplyRequest) error {
	return g.call(cmd, func(ctx context.Context, s *session) error {
		resp, err := s.op.Apply(ctx, req)
		if err != nil {
			return err
		}
		for _, r := range resp.Results {
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", lower(r.Kind), r.Name, r.Action)
		}
		return nil
	})
}
