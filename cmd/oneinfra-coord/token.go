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
	var kind, cluster, name string
	var ttl time.Duration
	var uses int
	create := &cobra.Command{
		Use:   "create --kind hypervisor|server|worker [--cluster NAME] [--name NAME] [--ttl D] [--uses N]",
		Short: "Create a join token; prints it with the --ca-hash to use with it",
		Long: "Create a join token; prints it with the --ca-hash to use with it. A token is used once (server, " +
			"hypervisor) or any number of times within its ttl (worker) unless --uses says otherwise; it lives at most 720h. " +
			"--name binds a hypervisor token to one name: the only way to register a name that is taken (a machine that " +
			"lost its identity), whose old certificate stops working then.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl <= 0 {
				return fmt.Errorf("--ttl: must be positive, got %s", ttl)
			}
			if uses < 0 {
				return fmt.Errorf("--uses: must be positive, got %d", uses)
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.CreateToken(ctx, &pb.CreateTokenRequest{
					Kind: kind, Cluster: cluster, Name: name, TtlSeconds: uint32(ttl.Seconds()), Uses: uint32(uses),
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "token: %s\nca-hash: %s\nexpires: %s\nuses: %s\n",
					resp.Token, resp.CaHash, resp.Info.Expires.AsTime().Format(time.RFC3339), usesLeft(resp.Info))
				return nil
			})
		},
	}
	create.Flags().StringVar(&kind, "kind", "", "hypervisor, server or worker (required)")
	create.Flags().StringVar(&cluster, "cluster", "", "the cluster a worker token joins")
	create.Flags().StringVar(&name, "name", "", "the one hypervisor name the token registers")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid (at most 720h)")
	create.Flags().IntVar(&uses, "uses", 0, "how many times the token may be used (default 1 for server and hypervisor, unlimited for worker)")
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
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tKIND\tCLUSTER\tNAME\tEXPIRES\tSTATE\tUSES")
				now := time.Now()
				for _, t := range resp.Tokens {
					state := "valid"
					switch {
					case t.Revoked:
						state = "revoked"
					case !now.Before(t.Expires.AsTime()):
						state = "expired"
					case t.MaxUses > 0 && t.Uses >= t.MaxUses:
						state = "used"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Id, t.Kind, dash(t.Cluster), dash(t.Name),
						t.Expires.AsTime().Format(time.RFC3339), state, usesLeft(t))
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

// usesLeft says how a token's uses stand: "0/1", or "3" when unlimited.
func usesLeft(t *pb.Token) string {
	if t.MaxUses == 0 {
		return fmt.Sprintf("%d (unlimited)", t.Uses)
	}
	return fmt.Sprintf("%d/%d", t.Uses, t.MaxUses)
}
