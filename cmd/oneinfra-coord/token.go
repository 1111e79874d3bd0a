package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newTokenCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke join tokens"}
	var kind, cluster string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --kind hypervisor|server|worker [--cluster NAME] [--ttl D]",
		Short: "Create a join token; prints it with the --ca-hash to use with it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl <= 0 {
				return fmt.Errorf("--ttl: must be positive, got %s", ttl)
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: kind, Cluster: cluster, TtlSeconds: uint32(ttl.Seconds())})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "token: %s\nca-hash: %s\nexpires: %s\n",
					resp.Token, resp.CaHash, resp.Info.Expires.AsTime().Format(time.RFC3339))
				return nil
			})
		},
	}
	create.Flags().StringVar(&kind, "kind", "", "hypervisor, server or worker (required)")
	create.Flags().StringVar(&cluster, "cluster", "", "the cluster a worker token joins")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	_ = create.MarkFlagRequired("kind")

	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (their secrets are never stored)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.ListTokens(ctx, &pb.ListTokensRequest{})
				if err != nil {
					return err
				}
				s.learnServers(resp.Meta)
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tKIND\tCLUSTER\tEXPIRES\tSTATE\tUSES")
				now := time.Now()
				for _, t := range resp.Tokens {
					state := "valid"
					switch {
					case t.Revoked:
						state = "revoked"
					case !now.Before(t.Expires.AsTime()):
						state = "expired"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", t.Id, t.Kind, dash(t.Cluster), t.Expires.AsTime().Format(time.RFC3339), state, t.Uses)
				}
				return tw.Flush()
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token: it is refused from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, s *session) error {
				if _, err := s.op.RevokeToken(ctx, &pb.RevokeTokenRequest{Id: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "token/%s revoked\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
