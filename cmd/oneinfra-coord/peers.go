package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/oneinfra/oneinfra/internal/manifest"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
)

// newClusterPeersCommand lists the worker nodes in a cluster's VPN.
func newClusterPeersCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "peers NAME [-o yaml|json]",
		Short: "List the worker nodes in a cluster's VPN: VPN address, pod subnet, last handshake",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, false); err != nil {
				return err
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.ListPeers(ctx, &pb.ListPeersRequest{Cluster: args[0]})
				if err != nil {
					return err
				}
				if output != "" {
					msgs := make([]proto.Message, len(resp.Peers))
					for i, p := range resp.Peers {
						msgs[i] = p
					}
					return manifest.Encode(cmd.OutOrStdout(), output, msgs)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVPN-ADDRESS\tPOD-CIDR\tLAST-HANDSHAKE\tENDPOINT\tJOINED")
				for _, p := range resp.Peers {
					handshake := "never"
					if p.LastHandshake != nil {
						handshake = age(p.LastHandshake) + " ago"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Address, p.PodCidr, handshake, dash(p.Endpoint), age(p.Joined))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml or json")
	return cmd
}

// newClusterRemoveNodeCommand removes a worker node from a cluster's VPN.
func newClusterRemoveNodeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove-node CLUSTER NODE",
		Short: "Remove a worker node: its VPN peer goes, its address and pod subnet are freed",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, s *session) error {
				if _, err := s.op.RemovePeer(ctx, &pb.RemovePeerRequest{Cluster: args[0], Name: args[1]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node/%s removed from cluster %s\n", args[1], args[0])
				return nil
			})
		},
	}
}
