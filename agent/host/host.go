// Package host is what the agent puts on its machine for one component:
// files under the component's directories and the CRI pods that use them.
// Renderers (controlplane, ingress) make a Plan; the agent applies it.
package host

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
)

// ErrWaiting marks an error of a component that waits for something
// outside it (another member to start, its turn to join); the agent
// reports the component Pending, not Failed, and tries again.
var ErrWaiting = errors.New("waiting")

// Plan is the wanted state of one component on this host.
type Plan struct {
	// Files to write; paths are absolute (under the agent's root dir).
	Files []File
	// Dirs to create (0700), such as etcd's data dir.
	Dirs []string
	// Pods to run.
	Pods []cri.Pod
}

// File is one file of a plan.
type File struct {
	Path string
	Data []byte
	Mode os.FileMode // keys 0600
}

// Paths are where a component's files live under the agent's root dir.
// Build them with NewPaths, which checks the names.
type Paths struct {
	Root, Cluster, Component string
}

// The dirs under the agent's root dir that hold every cluster's dirs.
const (
	configBase = "etc/oneinfra/clusters"
	dataBase   = "var/lib/oneinfra/clusters"
	keyBase    = "var/lib/oneinfra/keys"
)

// NewPaths are the paths of a cluster's component under root. It refuses
// a cluster or component name that is not a DNS-1123 label: a label has no
// '/' and is never "." or "..", so the paths stay in the component's own
// dirs, apart from every other component's and cluster's.
func NewPaths(root, cluster, component string) (Paths, error) {
	for _, n := range []struct{ field, name string }{{"cluster", cluster}, {"component", component}} {
		if err := checkName(n.field, n.name); err != nil {
			return Paths{}, err
		}
	}
	return Paths{Root: root, Cluster: cluster, Component: component}, nil
}

// ClusterDirs are the config and data dirs of a cluster under root (those
// of its components are in them); like NewPaths, it refuses a cluster name
// that is not a DNS-1123 label.
func ClusterDirs(root, cluster string) ([]string, error) {
	if err := checkName("cluster", cluster); err != nil {
		return nil, err
	}
	return []string{filepath.Join(root, configBase, cluster), filepath.Join(root, dataBase, cluster), filepath.Join(root, keyBase, cluster)}, nil
}

// checkName refuses a name that is not a DNS-1123 label, naming the field.
func checkName(field, name string) error {
	if !resources.IsDNS1123Label(name) {
		return fmt.Errorf("%s name %q is not a DNS-1123 label (1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit)", field, name)
	}
	return nil
}

// ConfigDir is ROOT/etc/oneinfra/clusters/CLUSTER/COMPONENT.
func (p Paths) ConfigDir() string {
	return filepath.Join(p.Root, configBase, p.Cluster, p.Component)
}

// DataDir is ROOT/var/lib/oneinfra/clusters/CLUSTER/COMPONENT.
func (p Paths) DataDir() string {
	return filepath.Join(p.Root, dataBase, p.Cluster, p.Component)
}

// KeyDir is ROOT/var/lib/oneinfra/keys/CLUSTER/COMPONENT: the private
// keys made here for the component's certificates. Only the agent uses it:
// no container mounts it (a component's data dir is mounted read-write in
// its containers, which must not reach the keys of its next certificates,
// nor plant a link there).
func (p Paths) KeyDir() string {
	return filepath.Join(p.Root, keyBase, p.Cluster, p.Component)
}

// Config is the path of a file in the component's config dir.
func (p Paths) Config(name string) string { return filepath.Join(p.ConfigDir(), name) }

// WriteFiles writes the plan's files and dirs, each file only when its
// content or mode differs, so unchanged files keep their times. It reports
// whether anything changed.
func (pl *Plan) WriteFiles() (changed bool, err error) {
	for _, d := range pl.Dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return changed, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	for _, f := range pl.Files {
		if same(f) {
			continue
		}
		if err := tlsutil.WriteFileAtomic(f.Path, f.Data, f.Mode); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}

func same(f File) bool {
	fi, err := os.Stat(f.Path)
	if err != nil || fi.Mode().Perm() != f.Mode.Perm() {
		return false
	}
	b, err := os.ReadFile(f.Path)
	return err == nil && bytes.Equal(b, f.Data)
}

// Remove deletes a component's config, data and key dirs, and the
// cluster's dirs when no component is left in them.
func (p Paths) Remove() error {
	for _, d := range []string{p.ConfigDir(), p.DataDir(), p.KeyDir()} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("removing %s: %w", d, err)
		}
		_ = os.Remove(filepath.Dir(d)) // the cluster's dir, if now empty
	}
	return nil
}
