package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newMembersCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List coordinator servers, which one leads, and their Raft indexes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.Members(ctx, &pb.MembersRequest{})
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tRAFT-ADDRESS\tAPI-ADDRESS\tLEADER\tSUFFRAGE\tSTATE\tLAST-INDEX\tCOMMIT-INDEX\tAPPLIED-INDEX")
				for _, m := range resp.Members {
					leader := ""
					if m.Leader {
						leader = "*"
					}
					state, last, commit, applied := m.State, fmt.Sprint(m.LastIndex), fmt.Sprint(m.CommitIndex), fmt.Sprint(m.AppliedIndex)
					if !m.Reachable {
						state, last, commit, applied = "unreachable: "+m.Error, "-", "-", "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Id, m.RaftAddress, dash(m.ApiAddress), leader, m.Suffrage, state, last, commit, applied)
				}
				return tw.Flush()
			})
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "remove ID",
		Short: "Take a server out of the coordinator; its certificate stops working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, s *session) error {
				if _, err := s.op.RemoveMember(ctx, &pb.RemoveMemberRequest{Id: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "server/%s removed\n", args[0])
				return nil
			})
		},
	})
	return cmd
}
