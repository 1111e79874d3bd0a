package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newAdminCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Create, list and revoke named operators",
		Long: "Named operators each have credentials of their own (admin.conf format), so that one can be revoked " +
			"without the others; --bootstrap makes the first, \"admin\". Every write is logged with its operator's name.",
	}
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create NAME [--ttl D] > NAME.conf",
		Short: "Create an operator: prints its credentials file (keep it 0600: it holds the private key)",
		Long: "Create an operator: prints its credentials file, in admin.conf format, on stdout. The key is made " +
			"here and never sent; the coordinator signs its certificate. Use it with --config FILE or $ONEINFRA_CONFIG.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl: must be positive, got %s", ttl)
			}
			key, keyPEM, err := tlsutil.GenerateKey()
			if err != nil {
				return err
			}
			csr, err := tlsutil.CreateCSR(key, args[0], nil)
			if err != nil {
				return err
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.CreateAdmin(ctx, &pb.CreateAdminRequest{Name: args[0], CsrPem: csr, TtlSeconds: uint32(ttl.Seconds())})
				if err != nil {
					return err
				}
				conf := client.NewConfig(resp.Servers, resp.CaPem, &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM})
				conf.ServerIDs = s.conf.ServerIDs
				conf.TrustGeneration, _ = s.members.TrustGeneration() // what the answer's CAs are of
				b, err := conf.Encode()
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(b)
				return err
			})
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 0, "how long the credentials live (default: the coordinator's --cert-validity)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the operators' certificates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.ListAdmins(ctx, &pb.ListAdminsRequest{})
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSERIAL\tISSUED\tEXPIRES\tBY\tSTATE")
				now := time.Now()
				for _, c := range resp.Certificates {
					state := "valid"
					switch {
					case c.Revoked:
						state = "revoked " + c.RevokedAt.AsTime().UTC().Format(time.RFC3339)
					case !now.Before(c.NotAfter.AsTime()):
						state = "expired"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Serial, c.NotBefore.AsTime().UTC().Format(time.RFC3339),
						c.NotAfter.AsTime().UTC().Format(time.RFC3339), c.IssuedBy, state)
				}
				return tw.Flush()
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an operator: its credentials are refused at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.RevokeAdmin(ctx, &pb.RevokeAdminRequest{Name: args[0]})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "operator/%s revoked (%d certificate(s))\n", args[0], resp.Revoked)
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
