package host

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewPaths(t *testing.T) {
	p, err := NewPaths("/r", "demo", "demo-cp-0")
	if err != nil {
		t.Fatal(err)
	}
	if p.ConfigDir() != "/r/etc/oneinfra/clusters/demo/demo-cp-0" || p.DataDir() != "/r/var/lib/oneinfra/clusters/demo/demo-cp-0" ||
		p.KeyDir() != "/r/var/lib/oneinfra/keys/demo/demo-cp-0" {
		t.Errorf("paths: %s %s %s", p.ConfigDir(), p.DataDir(), p.KeyDir())
	}
	dirs, err := ClusterDirs("/r", "demo")
	if err != nil || strings.Join(dirs, " ") != "/r/etc/oneinfra/clusters/demo /r/var/lib/oneinfra/clusters/demo /r/var/lib/oneinfra/keys/demo" {
		t.Errorf("cluster dirs: %v %v", dirs, err)
	}
}

// A name that is not a DNS-1123 label is refused with an error naming the
// field and the value; the accepted ones keep every path in its dirs.
func TestNewPathsRefusesBadNames(t *testing.T) {
	bad := []string{"", ".", "..", "../../etc", "../../../../../../tmp/x", "a/b", "/abs", "Demo", "a_b", "-a", "a-", "a b", strings.Repeat("a", 64)}
	for _, name := range bad {
		if _, err := NewPaths("/r", "demo", name); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("component name %q", name)) {
			t.Errorf("component %q: %v", name, err)
		}
		if _, err := NewPaths("/r", name, "c"); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("cluster name %q", name)) {
			t.Errorf("cluster %q: %v", name, err)
		}
		if _, err := ClusterDirs("/r", name); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("cluster name %q", name)) {
			t.Errorf("cluster dirs of %q: %v", name, err)
		}
	}
	for _, name := range []string{"a", "demo-cp-0", "0", strings.Repeat("a", 63)} {
		p, err := NewPaths("/r", name, name)
		if err != nil {
			t.Errorf("%q: %v", name, err)
			continue
		}
		for base, dir := range map[string]string{"/r/etc/oneinfra/clusters": p.ConfigDir(), "/r/var/lib/oneinfra/clusters": p.DataDir()} {
			if filepath.Dir(filepath.Dir(dir)) != base {
				t.Errorf("%q: %s is not two levels below %s", name, dir, base)
			}
		}
	}
}
