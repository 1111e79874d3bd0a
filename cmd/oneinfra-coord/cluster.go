package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newClusterCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Create clusters, get their kubeconfig, list and remove their worker nodes, back them up"}
	cmd.AddCommand(newClusterCreateCommand(g), newClusterKubeconfigCommand(g), newClusterPeersCommand(g), newClusterRemoveNodeCommand(g),
		newClusterBackupCommand(g), newClusterBackupsCommand(g), newClusterRestoreCommand(g),
		newClusterRotateCACommand(g))
	return cmd
}

func newClusterCreateCommand(g *globals) *cobra.Command {
	var (
		replicas int32
		version  string
		vpn      bool
		vpnCIDR  string
		wait     bool
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create NAME [--replicas N] [--version V] [--vpn] [--vpn-cidr CIDR] [--wait] [--timeout D]",
		Short: "Create a cluster (the imperative form of apply)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if vpnCIDR != "" && !vpn {
				return fmt.Errorf("--vpn-cidr: needs --vpn")
			}
			c := &pb.Cluster{
				ApiVersion: resources.APIVersion, Kind: resources.KindCluster,
				Metadata: &pb.ObjectMeta{Name: args[0]},
				Spec: &pb.ClusterSpec{
					KubernetesVersion: version,
					Vpn:               &pb.VPNSpec{Enabled: vpn, Cidr: vpnCIDR},
				},
			}
			if cmd.Flags().Changed("replicas") {
				c.Spec.ControlPlane = &pb.ControlPlaneSpec{Replicas: &replicas}
			}
			resources.DefaultCluster(c)
			if err := resources.ValidateCluster(c); err != nil {
				return fmt.Errorf("cluster %q: %w", args[0], flagNames(err))
			}
			req := &pb.ApplyRequest{CreateOnly: true, Resources: []*pb.Resource{{Source: "cluster create", Kind: &pb.Resource_Cluster{Cluster: c}}}}
			if err := applyResources(cmd, g, req); err != nil {
				return err
			}
			if !wait {
				return nil
			}
			return waitReady(cmd, g, args[0], timeout)
		},
	}
	f := cmd.Flags()
	f.Int32Var(&replicas, "replicas", 1, "control-plane replicas, from 1 to 7")
	f.StringVar(&version, "version", "", "Kubernetes version (default: the newest supported)")
	f.BoolVar(&vpn, "vpn", false, "give the cluster a WireGuard VPN for its workers")
	f.StringVar(&vpnCIDR, "vpn-cidr", "", "VPN CIDR (default: a free block of the coordinator's pool)")
	f.BoolVar(&wait, "wait", false, "show progress and return when the cluster is Ready")
	f.DurationVar(&timeout, "timeout", 15*time.Minute, "how long --wait waits")
	return cmd
}

// flagNames words a validation error in terms of this command's flags.
func flagNames(err error) error {
	return fmt.Errorf("%s", strings.NewReplacer(
		"spec.controlPlane.replicas", "--replicas",
		"spec.kubernetesVersion", "--version",
		"spec.vpn.cidr", "--vpn-cidr",
		"metadata.name", "NAME").Replace(err.Error()))
}

// waitReady follows a cluster until it is Ready, printing a short line
// for each change of its phase, of its replicas ready or of what it waits
// for; describe has the detail.
func waitReady(cmd *cobra.Command, g *globals, name string, timeout time.Duration) error {
	fmt.Fprintf(cmd.OutOrStdout(), "cluster/%s: waiting until Ready (details: oneinfra-coord describe cluster %s)\n", name, name)
	endpoint := ""
	last, took, err := follow(cmd, g, timeout, func(ctx context.Context, s *session) (step, bool, error) {
		resp, err := s.op.Describe(ctx, &pb.DescribeRequest{Name: name})
		if err != nil {
			return step{}, false, err
		}
		endpoint = resp.Cluster.GetStatus().GetApiServerEndpoint()
		return clusterStep(resp.Cluster, resp.Components), resp.Cluster.GetStatus().GetPhase() == resources.PhaseReady, nil
	})
	if errors.Is(err, errNotYet) {
		return errors.New(clip(fmt.Sprintf("cluster/%s not Ready after %s: %s", name, timeout, last.blocking()), maxLine))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "cluster/%s Ready in %s at %s\n", name, took.Round(time.Second), endpoint)
	return nil
}

func newClusterKubeconfigCommand(g *globals) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "kubeconfig NAME [--ttl D]",
		Short: "Print an admin kubeconfig whose server is the cluster's ingress endpoint",
		Long: "Print an admin kubeconfig whose server is the cluster's ingress endpoint. Its certificate lives --ttl " +
			"and is recorded with who asked for it and when it expires (describe cluster lists them).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 {
				return fmt.Errorf("--ttl: must be positive, got %s", ttl)
			}
			// Unset, the coordinator picks 24h, or its --cert-validity
			// when that is shorter.
			seconds := uint32(ttl.Seconds())
			if !cmd.Flags().Changed("ttl") {
				seconds = 0
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				kc, err := client.AdminKubeconfig(ctx, s.op, args[0], seconds)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(kc)
				return err
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the kubeconfig's certificate lives (unset: 24h, or the coordinator's --cert-validity when shorter)")
	return cmd
}
