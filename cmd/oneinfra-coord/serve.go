package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/oneinfra/oneinfra/coordinator"
	"github.com/oneinfra/oneinfra/coordinator/health"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/logging"
	"github.com/spf13/cobra"
)

func newServeCommand(g *globals) *cobra.Command {
	cfg := coordinator.Config{}
	var gossipJoin []string
	var tokenFile string
	cmd := &cobra.Command{
		Use:   "serve --id ID --data-dir DIR [--bootstrap | --join HOST:PORT --token TOKEN --ca-hash sha256:HEX]",
		Short: "Run a coordinator server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Bootstrap && cfg.Join != "" {
				return fmt.Errorf("--bootstrap and --join: use one or the other")
			}
			logger, err := logging.New(os.Stderr, g.logFormat, slog.LevelInfo)
			if err != nil {
				return err
			}
			cfg.Logger = logger
			cfg.GossipJoin = splitList(gossipJoin)
			if cfg.Token, err = client.Token(cfg.Token, tokenFile); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			srv, err := coordinator.Start(ctx, cfg)
			if err != nil {
				return err
			}
			<-ctx.Done()
			logger.Info("shutting down")
			return srv.Shutdown()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "this server's unique ID (required)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "where Raft, TLS and admin.conf live (required)")
	f.StringVar(&cfg.APIAddr, "api-addr", "0.0.0.0:7443", "gRPC API listen address (mutual TLS)")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "0.0.0.0:7444", "Raft listen address (mutual TLS)")
	f.StringVar(&cfg.Advertise, "advertise", "", "address peers and agents use to reach this server (default: the API host, else the first non-loopback IPv4)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:7480", "/metrics, /healthz and /readyz listen address")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", false, "start a new one-server coordinator cluster on an empty data dir")
	f.StringVar(&cfg.Join, "join", "", "join the coordinator cluster through this server (HOST:PORT)")
	f.StringVar(&cfg.Token, "token", "", "server token for --join (token create --kind server)")
	f.StringVar(&tokenFile, "token-file", "", "read --token from this file (mode 0600), so that it never shows in the process list")
	f.StringVar(&cfg.BackupTarget, "backup-target", "", "where agents store the clusters' etcd backups, sealed: file:///PATH, a directory every hypervisor has (such as an NFS mount), or s3://BUCKET/PREFIX?endpoint=HOST:PORT[&region=R][&insecure=true]")
	f.StringVar(&cfg.BackupCredentials, "backup-credentials", "", "an s3 target's access keys: a file (0600) of AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines")
	f.DurationVar(&cfg.CertValidity, "cert-validity", coordinator.DefaultCertValidity, "lifetime of every leaf certificate issued (CAs live 10 years)")
	f.StringVar(&cfg.CAHash, "ca-hash", "", "sha256:HEX of the coordinator CA, for --join")
	f.StringVar(&cfg.ImageRepository, "image-repository", "", "repository prefix of every image, for mirrors and air gaps (default: upstream registries)")
	f.StringVar(&cfg.VPNPool, "vpn-pool", coordinator.DefaultVPNPool, "the pool clusters' VPN CIDRs come from (read at --bootstrap)")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", "", "IP:PORT of this server's gossip observer (e.g. 0.0.0.0:7946; the port is advertised on the --advertise host); off when empty: hypervisor health then rests on the agents' reports alone")
	f.StringSliceVar(&gossipJoin, "gossip-join", nil, "gossip members to join, HOST:PORT,... (hypervisors' agents or other servers)")
	f.DurationVar(&cfg.Health.SuspectAfter, "suspect-after", health.DefaultSuspectAfter, "a hypervisor with no report for this long is suspect (keep it above the agents' 30s heartbeat)")
	f.DurationVar(&cfg.Health.DeadAfter, "dead-after", health.DefaultDeadAfter, "a hypervisor with no report for this long is dead (whatever gossip says): its components are placed elsewhere")
	_ = cmd.MarkFlagRequired("id")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

// splitList drops the empty and blank items of a comma-separated flag.
func splitList(items []string) []string {
	var out []string
	for _, it := range items {
		if it = strings.TrimSpace(it); it != "" {
			out = append(out, it)
		}
	}
	return out
}
