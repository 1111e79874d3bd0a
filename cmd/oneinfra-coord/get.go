package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oneinfra/oneinfra/internal/manifest"
	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func newGetCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME] [-o yaml|json|wide]",
		Short: "List or show clusters, hypervisors or components",
		Long:  "List or show clusters (cl), hypervisors (hv) or components (comp).",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := resources.NormalizeKind(args[0])
			if err != nil {
				return err
			}
			if err := checkOutput(output, true); err != nil {
				return err
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.Get(ctx, &pb.GetRequest{Kind: kind, Name: name})
				if err != nil {
					return err
				}
				return printGet(cmd.OutOrStdout(), kind, output, resp)
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml, json or wide (default: a table)")
	return cmd
}

// checkOutput refuses an unknown -o value.
func checkOutput(output string, wideOK bool) error {
	switch output {
	case "", "yaml", "json":
		return nil
	case "wide":
		if wideOK {
			return nil
		}
	}
	return fmt.Errorf("-o: must be yaml, json or wide, got %q", output)
}

func printGet(w io.Writer, kind, output string, resp *pb.GetResponse) error {
	var msgs []proto.Message
	for _, c := range resp.Clusters {
		msgs = append(msgs, c)
	}
	for _, h := range resp.Hypervisors {
		msgs = append(msgs, h)
	}
	for _, c := range resp.Components {
		msgs = append(msgs, c)
	}
	if output == "yaml" || output == "json" {
		return manifest.Encode(w, output, msgs)
	}
	wide := output == "wide"
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch kind {
	case "clusters":
		row(tw, wide, []string{"NAME", "VERSION", "REPLICAS", "VPN", "PHASE", "ENDPOINT", "AGE"}, "VPN-CIDR", "READY")
		for _, c := range resp.Clusters {
			vpn := "off"
			if c.Spec.GetVpn().GetEnabled() {
				vpn = "on"
			}
			ready := ""
			if cond := resources.FindCondition(c.GetStatus().GetConditions(), "Ready"); cond != nil {
				ready = cond.Reason + ": " + cond.Message
			}
			row(tw, wide, []string{c.Metadata.Name, c.Spec.KubernetesVersion, fmt.Sprint(c.Spec.ControlPlane.GetReplicas()), vpn,
				c.GetStatus().GetPhase(), dash(c.GetStatus().GetApiServerEndpoint()), age(c.Metadata.CreationTimestamp)},
				dash(c.Spec.GetVpn().GetCidr()), ready)
		}
	case "hypervisors":
		row(tw, wide, []string{"NAME", "PUBLIC", "ADDRESS", "PUBLIC-ADDRESS", "HEALTH", "COMPONENTS", "SCHEDULABLE", "LAST-SEEN"}, "PORT-RANGE", "PORTS-USED", "LABELS")
		for _, h := range resp.Hypervisors {
			row(tw, wide, []string{h.Metadata.Name, fmt.Sprint(h.Spec.Public), h.Spec.Address, dash(h.Spec.PublicAddress),
				h.GetStatus().GetHealth(), fmt.Sprint(len(h.GetStatus().GetComponents())), scheduling(h),
				age(h.GetStatus().GetLastSeen())},
				h.Spec.PortRange, fmt.Sprint(len(h.GetStatus().GetAllocatedPorts())), labels(h.Metadata.Labels))
		}
	case "components":
		row(tw, wide, []string{"NAME", "CLUSTER", "ROLE", "HYPERVISOR", "STATE", "PORTS"}, "MESSAGE")
		for _, c := range resp.Components {
			state := c.GetStatus().GetState()
			if c.Metadata.DeletionTimestamp != nil {
				state = "Removing"
			}
			row(tw, wide, []string{c.Metadata.Name, c.Spec.Cluster, c.Spec.Role, c.Spec.Hypervisor, dash(state), ports(c.Spec.Ports)},
				dash(c.GetStatus().GetMessage()))
		}
	}
	return tw.Flush()
}

// row writes a table row; the wide columns only with -o wide.
func row(w io.Writer, wide bool, cols []string, wideCols ...string) {
	if wide {
		cols = append(cols, wideCols...)
	}
	fmt.Fprintln(w, strings.Join(cols, "\t"))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func lower(s string) string { return strings.ToLower(s) }

// age prints how long ago t was, the way kubectl does.
func age(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return roughly(max(time.Since(t.AsTime()), 0))
}

// roughly prints a duration in its largest sensible unit: 90s, 5m, 3h, 12d.
func roughly(d time.Duration) string {
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func ports(p map[string]uint32) string {
	var out []string
	for name, port := range p {
		out = append(out, fmt.Sprintf("%s=%d", name, port))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func labels(l map[string]string) string {
	var out []string
	for k, v := range l {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return dash(strings.Join(out, ","))
}

// scheduling is a hypervisor's SCHEDULABLE column: true, false (cordoned),
// draining, or drained once nothing is left on it.
func scheduling(h *pb.Hypervisor) string {
	switch {
	case !h.Spec.Unschedulable:
		return "true"
	case !h.GetStatus().GetDraining():
		return "false"
	case len(h.GetStatus().GetComponents()) > 0:
		return "draining"
	}
	return "drained"
}
