package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/health"
	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func newDescribeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "describe cluster|hypervisor NAME",
		Short: "Show a cluster's or a hypervisor's spec, placements, conditions and recent events",
		Long: "Show a cluster's spec, placements, the health of its hypervisors, conditions with reasons and recent " +
			"events: why a cluster is not Ready. For a hypervisor: its health, scheduling, conditions, what is " +
			"placed on it and the events that name it.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := resources.NormalizeKind(args[0])
			if err != nil || kind == resources.Components {
				return fmt.Errorf("describe: clusters or hypervisors can be described, got %q", args[0])
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.Describe(ctx, &pb.DescribeRequest{Name: args[1], Kind: kind})
				if err != nil {
					return err
				}
				if kind == resources.Hypervisors {
					printDescribeHypervisor(cmd.OutOrStdout(), resp)
				} else {
					printDescribe(cmd.OutOrStdout(), resp)
				}
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
	field("Backups", backupSummary(c.Spec.GetBackup(), d.Backups))
	if r := c.GetStatus().GetRestore(); r != nil {
		field("Restore", fmt.Sprintf("%s (%s, asked %s ago): back to backup %s, %s old then, etcd revision %d",
			r.State, r.Reason, age(r.Requested), r.Backup, roughly(r.Requested.AsTime().Sub(r.Taken.AsTime())), r.Revision))
	}
	if r := d.GetCaRotation(); r != nil {
		field("CA rotation", fmt.Sprintf("%s (begun %s ago, this stage %s ago)", rotationStep(r, pki.StageName), age(r.Started), age(r.StageSince)))
	}
	field("API endpoint", dash(c.GetStatus().GetApiServerEndpoint()))
	if c.Spec.GetVpn().GetEnabled() {
		field("VPN endpoint", dash(c.GetStatus().GetVpnEndpoint()))
	}
	tw.Flush()

	printConditions(w, c.GetStatus().GetConditions())

	printComponents(w, d.Components)
	printCertificates(w, d.Certificates)
	if len(d.Hypervisors) > 0 {
		fmt.Fprintln(w, "\nHypervisors:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tHEALTH\tSCHEDULABLE\tLAST-SEEN\tMESSAGE")
		for _, h := range d.Hypervisors {
			msg := ""
			if cond := resources.FindCondition(h.GetStatus().GetConditions(), health.ConditionHealthy); cond != nil && cond.Status != "True" {
				msg = cond.Message
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", h.Metadata.Name, dash(h.GetStatus().GetHealth()), scheduling(h), age(h.GetStatus().GetLastSeen()), dash(msg))
		}
		tw.Flush()
	}
	printEvents(w, d.Events)
	printReadMeta(w, d.Meta)
}

// printDescribeHypervisor shows a hypervisor: spec, health and scheduling,
// conditions, what is placed on it, and the events that name it.
func printDescribeHypervisor(w io.Writer, d *pb.DescribeResponse) {
	h := d.Hypervisors[0]
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	field := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	field("Name", h.Metadata.Name)
	kind := "private"
	if h.Spec.Public {
		kind = "public, " + h.Spec.PublicAddress
	}
	field("Address", h.Spec.Address+" ("+kind+")")
	field("Health", dash(h.GetStatus().GetHealth()))
	field("Last seen", age(h.GetStatus().GetLastSeen()))
	field("Schedulable", scheduling(h))
	field("Ports", fmt.Sprintf("%s, %d in use", h.Spec.PortRange, len(h.GetStatus().GetAllocatedPorts())))
	if len(h.Metadata.Labels) > 0 {
		field("Labels", labels(h.Metadata.Labels))
	}
	tw.Flush()
	printConditions(w, h.GetStatus().GetConditions())
	printComponents(w, d.Components)
	printEvents(w, d.Events)
	printReadMeta(w, d.Meta)
}

func printConditions(w io.Writer, conds []*pb.Condition) {
	fmt.Fprintln(w, "\nConditions:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
	for _, cond := range conds {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", cond.Type, cond.Status, cond.Reason, age(cond.LastTransitionTime), cond.Message)
	}
	tw.Flush()
}

func printComponents(w io.Writer, comps []*pb.Component) {
	fmt.Fprintln(w, "\nComponents:")
	if len(comps) == 0 {
		fmt.Fprintln(w, "  none placed")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tROLE\tHYPERVISOR\tSTATE\tPORTS\tMESSAGE")
	for _, comp := range comps {
		state := dash(comp.GetStatus().GetState())
		if comp.Metadata.DeletionTimestamp != nil {
			state = "Removing"
		}
		msg := comp.GetStatus().GetMessage()
		if up := comp.GetStatus().GetBackends(); msg == "" && len(up) > 0 {
			msg = "API servers up: " + strings.Join(up, ", ")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", comp.Metadata.Name, comp.Spec.Role, comp.Spec.Hypervisor,
			state, ports(comp.Spec.Ports), dash(msg))
	}
	tw.Flush()
}

// printCertificates shows, per component, the certificate that expires
// first, when it is due for renewal and any renewal under way; the
// cluster's soonest expiry comes first.
func printCertificates(w io.Writer, sums []*pb.CertificateSummary) {
	if len(sums) == 0 {
		return
	}
	var first *pb.CertificateSummary
	for _, c := range sums {
		if c.SoonestExpiry != nil && (first == nil || c.SoonestExpiry.AsTime().Before(first.SoonestExpiry.AsTime())) {
			first = c
		}
	}
	fmt.Fprintln(w, "\nCertificates:")
	if first != nil {
		fmt.Fprintf(w, "  soonest expiry %s (%s of %s, %s)\n", stamp(first.SoonestExpiry), first.Soonest, first.Component, until(first.SoonestExpiry))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  COMPONENT\tGENERATION\tEXPIRES\tRENEWS\tRENEWAL")
	for _, c := range sums {
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\n", c.Component, c.Generation, stamp(c.SoonestExpiry), stamp(c.RenewAt), dash(c.Renewal))
	}
	tw.Flush()
}

// stamp prints a time in UTC to the second, or "-".
func stamp(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

// until prints how long until t: "in 5d", or "expired".
func until(t *timestamppb.Timestamp) string {
	if d := time.Until(t.AsTime()); d > 0 {
		return "in " + roughly(d)
	}
	return "expired"
}

func printEvents(w io.Writer, events []*pb.Event) {
	fmt.Fprintln(w, "\nEvents:")
	if len(events) == 0 {
		fmt.Fprintln(w, "  none")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  AGE\tTYPE\tREASON\tMESSAGE")
	for _, e := range events {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", age(e.Time), e.Type, e.Reason, e.Message)
	}
	tw.Flush()
}

func printReadMeta(w io.Writer, m *pb.ReadMeta) {
	if m != nil {
		fmt.Fprintf(w, "\n(read from server %s at index %d; leader %s)\n", m.Server, m.Index, dash(m.Leader))
	}
}
