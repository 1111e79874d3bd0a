package worker

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// cgroupMount is one mounted cgroup hierarchy.
type cgroupMount struct {
	path    string
	cpuset  bool // a v1 hierarchy with the cpuset controller
	unified bool // cgroup2
}

// cgroupMounts lists the cgroup hierarchies mounted, from a mountinfo file.
func cgroupMounts(mountinfo string) ([]cgroupMount, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, after := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(after) < 1 || (after[0] != "cgroup" && after[0] != "cgroup2") {
			continue
		}
		path := unescapeMount(fields[4])
		if seen[path] {
			continue
		}
		seen[path] = true
		m := cgroupMount{path: path, unified: after[0] == "cgroup2"}
		if len(after) >= 3 {
			for _, o := range strings.Split(after[2], ",") {
				m.cpuset = m.cpuset || o == "cpuset"
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ensureCgroupRoot makes root in every mounted cgroup hierarchy: the
// kubelet refuses a cgroup root that does not exist. In a cpuset
// hierarchy the new groups get their parent's CPUs and memory nodes, as a
// new cpuset is empty and takes no task.
func ensureCgroupRoot(mountinfo, root string) error {
	root = filepath.Clean("/" + root)
	if root == "/" {
		return nil
	}
	mounts, err := cgroupMounts(mountinfo)
	if err != nil {
		return fmt.Errorf("finding cgroup hierarchies: %w", err)
	}
	if len(mounts) == 0 {
		return fmt.Errorf("no cgroup hierarchy is mounted (%s)", mountinfo)
	}
	for _, m := range mounts {
		dir := m.path
		for _, part := range strings.Split(strings.TrimPrefix(root, "/"), "/") {
			parent := dir
			dir = filepath.Join(dir, part)
			if _, err := os.Stat(dir); err == nil {
				continue
			}
			if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
				return fmt.Errorf("making cgroup %s: %w", dir, err)
			}
			if m.cpuset {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					if err := inherit(parent, dir, f); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// inherit copies the parent's value of a cgroup file to an empty child.
func inherit(parent, child, file string) error {
	cur, err := os.ReadFile(filepath.Join(child, file))
	if err != nil || len(bytes.TrimSpace(cur)) > 0 {
		return nil
	}
	val, err := os.ReadFile(filepath.Join(parent, file))
	if err != nil {
		return nil
	}
	if err := os.WriteFile(filepath.Join(child, file), val, 0o644); err != nil {
		return fmt.Errorf("setting %s of cgroup %s: %w", file, child, err)
	}
	return nil
}
