package cri_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/oneinfra/oneinfra/agent/cri"
)

func TestSpecHash(t *testing.T) {
	base := func() cri.Pod {
		return cri.Pod{Component: "cp", Name: "etcd", Labels: map[string]string{"a": "1", "b": "2"}, Containers: []cri.Container{{
			Name: "etcd", Image: "registry.k8s.io/etcd:3.6.16-0", Command: []string{"etcd"}, Args: []string{"--name=x"},
			Env:    map[string]string{"A": "1", "B": "2", "C": "3"},
			Mounts: []cri.Mount{{HostPath: "/var/lib/x", ContainerPath: "/var/lib/etcd"}},
		}}}
	}
	h := cri.SpecHash(base())
	for i := 0; i < 20; i++ { // map order must not matter
		if got := cri.SpecHash(base()); got != h {
			t.Fatalf("hash not stable: %s then %s", h, got)
		}
	}
	if len(h) > 63 {
		t.Errorf("hash %q too long for a label value", h)
	}
	// The pod name defaults to the component.
	if cri.SpecHash(cri.Pod{Component: "x"}) != cri.SpecHash(cri.Pod{Component: "x", Name: "x"}) {
		t.Errorf("empty pod name hashes differently from its default")
	}
	changes := map[string]func(*cri.Pod){
		"image":    func(p *cri.Pod) { p.Containers[0].Image += "1" },
		"arg":      func(p *cri.Pod) { p.Containers[0].Args[0] = "--name=y" },
		"env":      func(p *cri.Pod) { p.Containers[0].Env["A"] = "9" },
		"readonly": func(p *cri.Pod) { p.Containers[0].Mounts[0].ReadOnly = true },
		"label":    func(p *cri.Pod) { p.Labels["a"] = "3" },
		"user":     func(p *cri.Pod) { u := int64(99); p.Containers[0].RunAsUser = &u },
		"args/cmd": func(p *cri.Pod) { p.Containers[0].Command, p.Containers[0].Args = nil, []string{"etcd", "--name=x"} },
	}
	for name, change := range changes {
		p := base()
		change(&p)
		if cri.SpecHash(p) == h {
			t.Errorf("changing the %s does not change the hash", name)
		}
	}
}

func TestTailLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	content := "2026-11-23T10:00:00.000000001Z stdout F first\n" +
		"2026-11-23T10:00:00.000000002Z stderr P part one, \n" +
		"2026-11-23T10:00:00.000000003Z stderr F part two\n" +
		"2026-11-23T10:00:00.000000004Z stdout F \n" +
		"2026-11-23T10:00:00.000000005Z stdout F last line\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := cri.TailLog(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"part one, part two", "", "last line"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := cri.TailLog(filepath.Join(t.TempDir(), "none"), 3); err == nil {
		t.Errorf("no error for a missing file")
	}
}
