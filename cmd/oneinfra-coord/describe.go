package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newDescribeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "describe cluster NAME",
		Short: "Show a cluster's spec, placements, conditions and recent events",
		Long:  "Show a cluster's spec, placements, conditions with reasons and recent events: why a cluster is not Ready.",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if k := strings.ToLower(args[0]); k != "cluster" && k != "clusters" && k != "cl" {
				return fmt.Errorf("describe: only clusters can be described, got %q", args[0])
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.Describe(ctx, &pb.DescribeRequest{Name: args[1]})
				if err != nil {
					return err
				}
				s.learnServers(resp.Meta)
				printDescribe(cmd.OutOrStdout(), resp)
				return nil
			})
		},
	}
}

func printDescribe(w io.Writer, d *pb.DescribeResponse) {
	c := d.Cluster
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	field := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	field("Name", c.Metadata.Name)
	field("Phase", c.GetStatus().GetPhase())
	if c.Metadata.DeletionTimestamp != nil {
		field("Deleting since", c.Metadata.DeletionTimestamp.AsTime().Format("2006-01-02T15:04:05Z07:00"))
	}
	field("Kubernetes", c.Spec.KubernetesVersion)
	field("Control plane", fmt.Sprintf("%d replica(s)", c.Spec.ControlPlane.GetReplicas()))
	vpn := "disabled"
	if c.Spec.GetVpn().GetEnabled() {
		vpn = "enabled, " + dash(c.Spec.Vpn.Cidr)
	}
	field("VPN", vpn)
	field("Networking", fmt.Sprintf("pods %s, services %s", c.Spec.GetNetworking().GetPodCidr(), c.Spec.GetNetworking().GetServiceCidr()))
	if sans := c.Spec.GetApiServer().GetExtraSans(); len(sans) > 0 {
		field("Extra SANs", strings.Join(sans, ", "))
	}
	field("API endpoint", dash(c.GetStatus().GetApiServerEndpoint()))
	if c.Spec.GetVpn().GetEnabled() {
		field("VPN endpoint", dash(c.GetStatus().GetVpnEndpoint()))
	}
	tw.Flush()

	fmt.Fprintln(w, "\nConditions:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
	for _, cond := range c.GetStatus().GetConditions() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", cond.Type, cond.Status, cond.Reason, age(cond.LastTransitionTime), cond.Message)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nComponents:")
	if len(d.Components) == 0 {
		fmt.Fprintln(w, "  none placed")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tROLE\tHYPERVISOR\tSTATE\tPORTS\tMESSAGE")
		for _, comp := range d.Components {
			state := dash(comp.GetStatus().GetState())
			if comp.Metadata.DeletionTimestamp != nil {
				state = "Removing"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", comp.Metadata.Name, comp.Spec.Role, comp.Spec.Hypervisor,
				state, ports(comp.Spec.Ports), dash(comp.GetStatus().GetMessage()))
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "\nEvents:")
	if len(d.Events) == 0 {
		fmt.Fprintln(w, "  none")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  AGE\tTYPE\tREASON\tMESSAGE")
		for _, e := range d.Events {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", age(e.Time), e.Type, e.Reason, e.Message)
		}
		tw.Flush()
	}
	if m := d.Meta; m != nil {
		fmt.Fprintf(w, "\n(read from server %s at index %d; leader %s)\n", m.Server, m.Index, dash(m.Leader))
	}
}
