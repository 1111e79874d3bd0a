package main

import (
	"fmt"
	"strings"

	"github.com/oneinfra/oneinfra/internal/version"
	"github.com/spf13/cobra"
)

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the build version and the supported Kubernetes versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "oneinfra-coord %s\nKubernetes: %s\n", version.Version, strings.Join(version.KubernetesVersions, ", "))
			return nil
		},
	}
}
