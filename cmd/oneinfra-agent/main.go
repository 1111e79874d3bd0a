// Command oneinfra-agent is the oneinfra hypervisor agent (hypervisor).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/oneinfra/oneinfra/agent"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/gossip"
	"github.com/oneinfra/oneinfra/internal/logging"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/version"
	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error: "+strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var logFormat string
	root := &cobra.Command{
		Use:           "oneinfra-agent",
		Short:         "oneinfra agent: runs a hypervisor's assigned control planes and ingresses",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(newHypervisorCommand(&logFormat), newWorkerCommand(&logFormat), &cobra.Command{
		Use:   "version",
		Short: "Print the build version and the supported Kubernetes versions",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "oneinfra-agent %s\nKubernetes: %s\n", version.Version, strings.Join(version.KubernetesVersions, ", "))
		},
	})
	return root
}

func newHypervisorCommand(logFormat *string) *cobra.Command {
	cfg := agent.Config{}
	var coordinators, tokenFile string
	cmd := &cobra.Command{
		Use:   "hypervisor --name NAME --address IP --coordinator HOST:PORT[,HOST:PORT...]",
		Short: "Run the agent of a hypervisor",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logging.New(os.Stderr, *logFormat, slog.LevelInfo)
			if err != nil {
				return err
			}
			cfg.Logger = logger
			if cfg.Token, err = client.Token(cfg.Token, tokenFile); err != nil {
				return err
			}
			for _, c := range strings.Split(coordinators, ",") {
				if c = strings.TrimSpace(c); c != "" {
					cfg.Coordinators = append(cfg.Coordinators, c)
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			a, err := agent.New(ctx, cfg)
			if err != nil {
				return err
			}
			defer a.Close()
			if err := a.ServeMetrics(); err != nil {
				return err
			}
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "this hypervisor's name (required)")
	f.StringVar(&cfg.Address, "address", "", "private network address (required)")
	f.StringVar(&coordinators, "coordinator", "", "coordinator servers, HOST:PORT[,HOST:PORT...] (required)")
	f.StringVar(&cfg.Token, "token", "", "hypervisor token, first start only (oneinfra-coord token create --kind hypervisor)")
	f.StringVar(&tokenFile, "token-file", "", "read --token from this file (mode 0600), so that it never shows in the process list")
	f.StringVar(&cfg.CAHash, "ca-hash", "", "sha256:HEX of the coordinator CA, first start only")
	f.BoolVar(&cfg.Public, "public", false, "this hypervisor is public: it runs ingresses")
	f.StringVar(&cfg.PublicAddress, "public-address", "", "public address, with --public")
	f.StringVar(&cfg.CRIEndpoint, "cri-endpoint", "unix:///run/containerd/containerd.sock", "CRI runtime endpoint")
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/oneinfra-agent", "identity and local state (bbolt)")
	f.StringVar(&cfg.RootDir, "root-dir", "/", "prefix of the host paths components use")
	f.StringVar(&cfg.PortRange, "port-range", resources.DefaultPortRange, "host ports components may be given")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:7481", "/metrics, /healthz and /readyz listen address")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", "", fmt.Sprintf("IP:PORT of this hypervisor's gossip member (default: --address with port %d)", gossip.DefaultPort))
	f.StringSliceVar(&cfg.GossipJoin, "gossip-join", nil, "gossip members to join, HOST:PORT,... (other agents, coordinator servers' --gossip-addr)")
	f.StringVar(&cfg.WireGuardPrefix, "wireguard-prefix", "oi-", "public hypervisors: name prefix of the VPN endpoints' WireGuard devices, at most 5 characters (PREFIX + cluster, or a hash of a name too long for 15 bytes)")
	f.StringVar(&cfg.JoinAddr, "join-addr", fmt.Sprintf(":%d", resources.DefaultJoinPort), "public hypervisors: where workers join (TLS with the coordinator CA)")
	for _, name := range []string{"name", "address", "coordinator"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
