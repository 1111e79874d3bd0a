package agent

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// recordingDriver plans a file and a data dir per component, no pod, and
// records what it was asked about.
type recordingDriver struct{ planned []string }

func (d *recordingDriver) plan(_ context.Context, as *pb.Assignment, paths host.Paths) (*host.Plan, error) {
	d.planned = append(d.planned, as.Component.Metadata.Name)
	return &host.Plan{Files: []host.File{{Path: paths.Config("file"), Data: []byte("x"), Mode: 0o600}}, Dirs: []string{paths.DataDir()}}, nil
}

func (d *recordingDriver) synced(context.Context, *pb.Assignment, host.Paths, bool, []cri.PodStatus, *pb.ComponentStatus) {
}

func (d *recordingDriver) removing(_ context.Context, as *pb.Assignment, _ host.Paths) error {
	d.planned = append(d.planned, "removing "+as.Component.Metadata.Name)
	return nil
}

// files lists what is under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// An assignment whose cluster or component name is not a DNS-1123 label
// is refused, Failed with the field and the value, and nothing is made
// for it; stray cleanup is not led out of its dirs by crafted CRI labels
// or sandbox names. Needs root, containerd and runc.
func TestCraftedNames(t *testing.T) {
	ctx := context.Background()
	inst := containerd.Start(t)
	inst.Import(t, "pause")
	top := t.TempDir()
	root := filepath.Join(top, "root")
	rt, err := cri.Connect(ctx, inst.Endpoint(), cri.Options{LogDir: filepath.Join(top, "logs"), StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	st, err := openStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	drv := &recordingDriver{}
	a := &Agent{cfg: Config{RootDir: root}, logger: slog.New(slog.NewTextHandler(io.Discard, nil)), store: st, runtime: rt,
		drivers: map[string]driver{resources.RoleControlPlane: drv}}
	assignment := func(cluster, component string, deleting bool) *pb.Assignment {
		return &pb.Assignment{Deleting: deleting, Component: &pb.Component{Metadata: &pb.ObjectMeta{Name: component},
			Spec: &pb.ComponentSpec{Cluster: cluster, Role: resources.RoleControlPlane}}}
	}

	t.Run("assignments", func(t *testing.T) {
		drv.planned = nil
		// By component: the state and message wanted (a component being
		// removed says Removing, with why it cannot be).
		type refusal struct{ state, message string }
		want := map[string]refusal{}
		list := []*pb.Assignment{assignment("demo", "demo-cp-0", false)}
		for i, c := range []string{"../../etc", "../../../../../outside", "a/b", "..", "demo_cp"} {
			deleting := i%2 == 1
			list = append(list, assignment("demo", c, deleting))
			want[c] = refusal{map[bool]string{false: vocab.StateFailed, true: vocab.StateRemoving}[deleting], fmt.Sprintf("component name %q is not a DNS-1123 label", c)}
		}
		reports, removed := a.syncCluster(ctx, "demo", list)
		for i, cluster := range []string{"a/b", "../../../../escape", "..", "Demo"} {
			component := fmt.Sprintf("c-%d", i)
			r, rm := a.syncCluster(ctx, cluster, []*pb.Assignment{assignment(cluster, component, false)})
			reports, removed = append(reports, r...), append(removed, rm...)
			want[component] = refusal{vocab.StateFailed, fmt.Sprintf("cluster name %q is not a DNS-1123 label", cluster)}
		}
		if len(removed) != 0 {
			t.Errorf("removed %v", removed)
		}
		for _, r := range reports {
			w, bad := want[r.Component]
			switch {
			case !bad && r.Component != "demo-cp-0":
				t.Errorf("unexpected report %v", r)
			case !bad:
				if r.Status.State == vocab.StateFailed {
					t.Errorf("the good component failed: %v", r.Status)
				}
			case r.Status.State != w.state || !strings.Contains(r.Status.Message, w.message):
				t.Errorf("%s: %s %q, want %s with %q", r.Component, r.Status.State, r.Status.Message, w.state, w.message)
			}
		}
		if len(reports) != 1+len(want) {
			t.Errorf("%d reports, want %d", len(reports), 1+len(want))
		}
		if !slices.Equal(drv.planned, []string{"demo-cp-0"}) {
			t.Errorf("the driver was asked about %v", drv.planned)
		}
		got := files(t, root)
		wantFiles := []string{".", "etc", "etc/oneinfra", "etc/oneinfra/clusters", "etc/oneinfra/clusters/demo",
			"etc/oneinfra/clusters/demo/demo-cp-0", "etc/oneinfra/clusters/demo/demo-cp-0/file",
			"var", "var/lib", "var/lib/oneinfra", "var/lib/oneinfra/clusters", "var/lib/oneinfra/clusters/demo",
			"var/lib/oneinfra/clusters/demo/demo-cp-0"}
		if !slices.Equal(got, wantFiles) {
			t.Errorf("under the root dir:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantFiles, "\n"))
		}
		if got := files(t, top); slices.Contains(got, "outside") || slices.Contains(got, "escape") {
			t.Errorf("made outside the root dir: %v", got)
		}
	})

	t.Run("stray pods", func(t *testing.T) {
		conn, err := grpc.NewClient(inst.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		raw := runtimeapi.NewRuntimeServiceClient(conn)
		// What the old code would have removed: the dirs a crafted
		// cluster label or sandbox name points at.
		victims := []string{filepath.Join(top, "victim"), filepath.Join(root, "victim"), filepath.Join(top, "victim-log_p_u1")}
		for _, v := range victims {
			if err := os.MkdirAll(v, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for i, sb := range []struct{ cluster, namespace string }{{"../../../../victim", "ns"}, {"stray", "../victim-log"}} {
			cfg := &runtimeapi.PodSandboxConfig{
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: sb.namespace, Uid: fmt.Sprintf("u%d", i)},
				Labels:   map[string]string{cri.LabelCluster: sb.cluster, cri.LabelComponent: "c", cri.LabelPod: "p", cri.LabelSpecHash: "h"},
				Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
					NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}},
			}
			if _, err := raw.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg}); err != nil {
				t.Fatal(err)
			}
		}
		a.removeStrayClusters(ctx, map[string][]*pb.Assignment{"demo": nil})
		for _, v := range victims {
			if _, err := os.Stat(v); err != nil {
				t.Errorf("%s: %v", v, err)
			}
		}
		// The pods of a crafted label are left alone; the others go.
		if clusters, err := rt.Clusters(ctx); err != nil || !slices.Equal(clusters, []string{"../../../../victim"}) {
			t.Errorf("clusters left: %v %v", clusters, err)
		}
		if _, err := os.Stat(filepath.Join(root, "etc/oneinfra/clusters/demo/demo-cp-0")); err != nil {
			t.Errorf("an assigned cluster's files: %v", err)
		}
	})
}
