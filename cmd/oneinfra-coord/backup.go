package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/oneinfra/oneinfra/coordinator"
	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

func newClusterBackupCommand(g *globals) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "backup NAME [--wait] [--timeout D]",
		Short: "Take an etcd backup of a cluster now, to the coordinator's --backup-target",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b *pb.Backup
			err := g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.BackupCluster(ctx, &pb.BackupClusterRequest{Cluster: args[0]})
				b = resp.GetBackup()
				return err
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "backup %s of cluster %s asked of %s\n", b.Id, b.Cluster, b.Component)
			if !wait {
				return nil
			}
			var got *pb.Backup
			last, _, err := follow(cmd, g, timeout, func(ctx context.Context, s *session) (step, bool, error) {
				list, err := s.op.ListBackups(ctx, &pb.ListBackupsRequest{Cluster: args[0]})
				if err != nil {
					return step{}, false, err
				}
				for _, x := range list.Backups {
					if x.Id == b.Id {
						got = x
					}
				}
				return step{state: "pending on " + b.Component}, got.GetState() == coordinator.BackupDone || got.GetState() == coordinator.BackupFailed, nil
			})
			switch {
			case errors.Is(err, errNotYet):
				return fmt.Errorf("backup %s not taken after %s (%s)", b.Id, timeout, last.blocking())
			case err != nil:
				return err
			case got.State == coordinator.BackupFailed:
				return fmt.Errorf("backup %s failed: %s", got.Id, got.Message)
			}
			fmt.Fprintf(out, "backup %s taken: etcd revision %d, %s stored\n", got.Id, got.Revision, bytesString(got.Size))
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the backup is taken and checked")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "how long --wait waits")
	return cmd
}

func newClusterBackupsCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "backups NAME",
		Short: "List a cluster's etcd backups, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(cmd, func(ctx context.Context, s *session) error {
				list, err := s.op.ListBackups(ctx, &pb.ListBackupsRequest{Cluster: args[0]})
				if err != nil {
					return err
				}
				printBackups(cmd.OutOrStdout(), list.Backups)
				return nil
			})
		},
	}
}

// printBackups is the table of `cluster backups`.
func printBackups(w io.Writer, list []*pb.Backup) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tSTATE\tREVISION\tSIZE\tBY\tMESSAGE")
	for _, b := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", b.Id, b.Requested.AsTime().UTC().Format(time.RFC3339), b.State,
			b.Revision, bytesString(b.Size), b.Component, b.Message)
	}
	tw.Flush()
}

// bytesString is a size for people.
func bytesString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// backupSummary tells, for describe, the backup schedule and the newest
// backup taken (its age is what a rebuild from it would lose), and a
// failure since.
func backupSummary(spec *pb.BackupSpec, list []*pb.Backup) string {
	if !spec.GetEnabled() {
		return "disabled"
	}
	out := fmt.Sprintf("every %s, %d kept", spec.Schedule, spec.Retain)
	for _, b := range list {
		switch b.State {
		case coordinator.BackupFailed:
			out += fmt.Sprintf("; %s failed %s ago: %s", b.Id, age(b.Requested), b.Message)
			continue
		case coordinator.BackupPending:
			out += fmt.Sprintf("; %s being taken by %s", b.Id, b.Component)
			continue
		}
		return out + fmt.Sprintf("; newest %s, %s old, etcd revision %d", b.Id, age(b.Finished), b.Revision)
	}
	return out + "; none taken yet"
}

func newClusterRestoreCommand(g *globals) *cobra.Command {
	var id string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "restore NAME --backup ID [--wait] [--timeout D]",
		Short: "Replace a cluster's etcd data, on every replica, with one of its backups",
		Long: "Replace a cluster's etcd data, on every replica, with one of its backups (`cluster backups NAME`).\n" +
			"Each replica stops, keeps its etcd data aside (etcd.before-restore-N in its data dir), starts\n" +
			"again on the backup's, and the cluster is Ready again with the state of that time; its CAs\n" +
			"and keys stay. The API is down while the replicas restart.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if id == "" {
				return fmt.Errorf("--backup: required (see `cluster backups %s`)", args[0])
			}
			var r *pb.ClusterRestore
			err := g.call(cmd, func(ctx context.Context, s *session) error {
				resp, err := s.op.RestoreCluster(ctx, &pb.RestoreClusterRequest{Cluster: args[0], Backup: id})
				r = resp.GetRestore()
				return err
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "cluster/%s restoring from backup %s (etcd revision %d)\n", args[0], r.Backup, r.Revision)
			if !wait {
				return nil
			}
			// Each step as the replicas' agents report it (describe has
			// the detail).
			last, took, err := follow(cmd, g, timeout, func(ctx context.Context, s *session) (step, bool, error) {
				d, err := s.op.Describe(ctx, &pb.DescribeRequest{Name: args[0]})
				if err != nil {
					return step{}, false, err
				}
				cur := d.Cluster.GetStatus().GetRestore()
				done := cur.GetGeneration() == r.Generation && cur.GetState() == coordinator.RestoreDone && d.Cluster.Status.Phase == resources.PhaseReady
				return clusterStep(d.Cluster, d.Components), done, nil
			})
			if errors.Is(err, errNotYet) {
				return errors.New(clip(fmt.Sprintf("cluster/%s not restored after %s: %s", args[0], timeout, last.blocking()), maxLine))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "cluster/%s restored from backup %s in %s, Ready\n", args[0], r.Backup, took.Round(time.Second))
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "backup", "", "the backup's ID")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every replica runs on the backup's data and the cluster is Ready")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "how long --wait waits")
	return cmd
}
