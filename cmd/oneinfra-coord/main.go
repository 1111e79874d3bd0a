// Command oneinfra-coord is the oneinfra coordinator server (serve) and the
// operator's CLI (every other subcommand).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
)

func main() {
	root := newRootCommand()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error: "+oneLine(err))
		os.Exit(1)
	}
}

// globals are the flags every subcommand shares.
type globals struct {
	config    string
	logFormat string
	stale     bool
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "oneinfra-coord",
		Short:         "oneinfra coordinator: Kubernetes control planes as a service on machines you own",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.config, "config", "", "credentials file (default $ONEINFRA_CONFIG, else ~/.oneinfra/config)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().BoolVar(&g.stale, "stale", false, "let any server answer reads from its own copy (works without a leader; the output says how fresh it is)")
	root.AddCommand(
		newServeCommand(g),
		newApplyCommand(g),
		newGetCommand(g),
		newDeleteCommand(g),
		newDescribeCommand(g),
		newClusterCommand(g),
		newHypervisorCommand(g),
		newTokenCommand(g),
		newAdminCommand(g),
		newMembersCommand(g),
		newSnapshotCommand(g),
		newRotateCACommand(g),
		newVersionCommand(g),
	)
	return root
}

// oneLine turns an error into the single line the CLI prints: the gRPC
// status message without its wrapping, on one line.
func oneLine(err error) string {
	msg := err.Error()
	if s, ok := status.FromError(err); ok {
		msg = s.Message()
		if errors.Is(err, context.DeadlineExceeded) || s.Code().String() == "DeadlineExceeded" {
			msg = "timed out waiting for the coordinator: " + msg
		}
	}
	var lines []string
	for _, line := range strings.Split(msg, "\n") {
		if line = strings.Join(strings.Fields(line), " "); line != "" {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "; ")
}
