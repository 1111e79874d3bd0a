// Command lab makes and removes the one-machine lab of test/lab:
//
//	lab up [--prefix P] [--private N] [--public N] [--workers N]   # hosts with containerd and the images
//	lab down [--prefix P]                             # removes everything of it
//	lab exec [--prefix P] HOST -- CMD...              # runs CMD in HOST's network namespace
//	lab status [--prefix P]                           # hosts and their addresses
//
// Workers (worker-1...) sit behind two NAT routers each, whose namespaces
// `lab exec` enters as the hosts worker-N-outer and worker-N-inner.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/test/lab"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: lab up|down|exec|status|cut|reconnect [flags]")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func run(verb string, args []string) error {
	fs := flag.NewFlagSet(verb, flag.ExitOnError)
	prefix := fs.String("prefix", "oilab", "name prefix of the lab's namespaces, links and files")
	private := fs.Int("private", 3, "private hosts (hv-1...)")
	public := fs.Int("public", 1, "public hosts (pub-1...)")
	workers := fs.Int("workers", 0, "worker hosts behind two NATs, containerd with CNI (worker-1...)")
	images := fs.String("images", "_output/images", "directory of the image tarballs (make images)")
	_ = fs.Parse(args)
	state := filepath.Join(lab.Dir(*prefix), "lab.json")
	switch verb {
	case "up":
		root, err := containerd.RepoRoot()
		if err != nil {
			return err
		}
		spec := lab.Spec{Prefix: *prefix, RepoRoot: root, ImagesDir: *images, Images: lab.Images}
		for i := 1; i <= *private; i++ {
			spec.Hosts = append(spec.Hosts, lab.HostSpec{Name: fmt.Sprintf("hv-%d", i)})
		}
		for i := 1; i <= *public; i++ {
			spec.Hosts = append(spec.Hosts, lab.HostSpec{Name: fmt.Sprintf("pub-%d", i), Public: true})
		}
		for i := 1; i <= *workers; i++ {
			spec.Hosts = append(spec.Hosts, lab.HostSpec{Name: fmt.Sprintf("worker-%d", i), Worker: true})
		}
		began := time.Now()
		l, err := lab.Up(context.Background(), spec)
		if err != nil {
			return err
		}
		b, _ := json.MarshalIndent(l.Hosts, "", "  ")
		if err := os.WriteFile(state, b, 0o600); err != nil {
			return err
		}
		fmt.Printf("lab %s up in %.1fs: %d hosts (state in %s)\n", *prefix, time.Since(began).Seconds(), len(l.Hosts), state)
		return nil
	case "down":
		return lab.Down(*prefix)
	case "status":
		b, err := os.ReadFile(state)
		if err != nil {
			return fmt.Errorf("no lab %q is up", *prefix)
		}
		_, err = os.Stdout.Write(append(b, '\n'))
		return err
	case "exec":
		rest := fs.Args()
		if len(rest) < 3 || rest[1] != "--" {
			return fmt.Errorf("usage: lab exec HOST -- CMD...")
		}
		h := &lab.Host{Namespace: *prefix + "-" + rest[0]}
		argv := append(h.Enter(), rest[2:]...)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd.Run()
	case "cut", "reconnect":
		if fs.NArg() != 1 {
			return fmt.Errorf("usage: lab %s HOST", verb)
		}
		state := map[string]string{"cut": "down", "reconnect": "up"}[verb]
		return lab.SetHostLinks(*prefix, fs.Arg(0), state)
	}
	return fmt.Errorf("unknown verb %q: want up, down, exec, status, cut or reconnect", verb)
}
