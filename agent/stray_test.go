package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A host back from the dead keeps the files of the components still
// assigned to it and loses those of the components moved away, of that
// cluster only.
func TestRemoveStrayComponentDirs(t *testing.T) {
	root := t.TempDir()
	mk := func(p string) {
		if err := os.MkdirAll(filepath.Join(root, p), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{
		"etc/oneinfra/clusters/demo/demo-cp-0", "var/lib/oneinfra/clusters/demo/demo-cp-0/etcd",
		"etc/oneinfra/clusters/demo/demo-cp-1", "var/lib/oneinfra/clusters/demo/demo-cp-1/etcd/member",
		"var/lib/oneinfra/clusters/demo/demo-ingress-0",
		"etc/oneinfra/clusters/other/other-cp-0",
	} {
		mk(p)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/oneinfra/clusters/demo/not-a-dir"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	removed := removeStrayComponentDirs(root, "demo", map[string]bool{"demo-cp-0": true})
	if !slices.Equal(removed, []string{"demo-cp-1", "demo-ingress-0"}) {
		t.Errorf("removed %v", removed)
	}
	for p, want := range map[string]bool{
		"etc/oneinfra/clusters/demo/demo-cp-0":          true,
		"var/lib/oneinfra/clusters/demo/demo-cp-0/etcd": true,
		"etc/oneinfra/clusters/demo/demo-cp-1":          false,
		"var/lib/oneinfra/clusters/demo/demo-cp-1":      false,
		"var/lib/oneinfra/clusters/demo/demo-ingress-0": false,
		"etc/oneinfra/clusters/other/other-cp-0":        true,
		"etc/oneinfra/clusters/demo/not-a-dir":          true,
	} {
		if _, err := os.Stat(filepath.Join(root, p)); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", p, err == nil, want)
		}
	}
	if removed := removeStrayComponentDirs(root, "nothing-here", nil); len(removed) != 0 {
		t.Errorf("a cluster without dirs: removed %v", removed)
	}
}

// A crafted cluster name, or an entry on disk that the agent would not
// have made (a symlink, a name that is not a component's), never leads the
// removal out of the cluster's own dirs.
func TestRemoveStrayComponentDirsStaysInItsDirs(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "root")
	outside := filepath.Join(top, "outside")
	for _, d := range []string{outside, filepath.Join(root, "etc/oneinfra/clusters/demo/demo-cp-0"), filepath.Join(root, "etc/oneinfra/clusters/demo/Not_A_Label")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "etc/oneinfra/clusters/demo/link")); err != nil {
		t.Fatal(err)
	}
	for _, cluster := range []string{"..", "../..", "../../../..", "demo/../..", ""} {
		if removed := removeStrayComponentDirs(root, cluster, nil); len(removed) != 0 {
			t.Errorf("cluster %q: removed %v", cluster, removed)
		}
	}
	if removed := removeStrayComponentDirs(root, "demo", nil); !slices.Equal(removed, []string{"demo-cp-0"}) {
		t.Errorf("removed %v", removed)
	}
	for _, p := range []string{filepath.Join(outside, "file"), filepath.Join(root, "etc/oneinfra/clusters/demo/Not_A_Label"), filepath.Join(root, "etc/oneinfra/clusters/demo/link")} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
