package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/oneinfra/oneinfra/agent/worker"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/logging"
	"github.com/spf13/cobra"
)

func newWorkerCommand(logFormat *string) *cobra.Command {
	cfg := worker.Config{}
	var tokenFile string
	cmd := &cobra.Command{
		Use:   "worker --join HOST:PORT --name NAME [--token TOKEN --ca-hash sha256:HEX]",
		Short: "Run the agent of a worker node: join a cluster through its VPN and run the kubelet",
		Long: `Run the agent of a worker node, which may sit behind NAT.

The first start trades --token (oneinfra-coord token create --kind worker)
at the join endpoint --join, whose certificate is checked against the
coordinator CA pinned by --ca-hash, for the node's VPN configuration and a
client certificate, kept in --data-dir; later starts need neither. The agent
then brings the WireGuard tunnel up, writes the kubelet's and CNI's files,
runs the kubelet (--kubelet-command as a child, else the systemd unit
oneinfra-kubelet.service) and keeps the tunnel up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logging.New(os.Stderr, *logFormat, slog.LevelInfo)
			if err != nil {
				return err
			}
			cfg.Logger = logger
			if cfg.Token, err = client.Token(cfg.Token, tokenFile); err != nil {
				return err
			}
			w, err := worker.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return w.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Join, "join", "", "join endpoint of a public hypervisor, HOST:PORT (required)")
	f.StringVar(&cfg.Name, "name", "", "this node's name (required)")
	f.StringVar(&cfg.Token, "token", "", "worker token, first start only")
	f.StringVar(&tokenFile, "token-file", "", "read --token from this file (mode 0600), so that it never shows in the process list")
	f.StringVar(&cfg.CAHash, "ca-hash", "", "sha256:HEX of the coordinator CA, first start only")
	f.StringVar(&cfg.CRIEndpoint, "cri-endpoint", worker.DefaultCRIEndpoint, "CRI runtime endpoint of the kubelet")
	f.StringVar(&cfg.DataDir, "data-dir", worker.DefaultDataDir, "keys, the worker's configuration and the kubelet's files")
	f.StringVar(&cfg.KubeletCommand, "kubelet-command", "", "run this kubelet as a supervised child instead of the systemd unit "+worker.KubeletUnit)
	f.StringVar(&cfg.KubeletPath, "kubelet-path", worker.DefaultKubeletPath, "the kubelet the systemd unit runs")
	f.StringVar(&cfg.KubeletRootDir, "kubelet-root-dir", worker.DefaultKubeletRootDir, "the kubelet's --root-dir")
	f.StringVar(&cfg.CgroupRoot, "cgroup-root", "/", "the kubelet's cgroup root (made if missing)")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", worker.DefaultCNIConfDir, "where the CNI configuration is written")
	f.StringVar(&cfg.Interface, "interface", worker.DefaultInterface, "WireGuard interface name")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve /healthz and /readyz (tunnel up) here; off when empty")
	f.DurationVar(&cfg.RefreshInterval, "refresh-interval", 0, "how often to ask for a fresh configuration (default 1m)")
	f.DurationVar(&cfg.HealthInterval, "health-interval", 0, "how often to read the tunnel's last handshake (default 10s)")
	_ = f.MarkHidden("refresh-interval")
	_ = f.MarkHidden("health-interval")
	for _, name := range []string{"join", "name"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
