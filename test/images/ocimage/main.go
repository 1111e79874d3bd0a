// Command ocimage writes a single-layer OCI image-layout tarball (see package
// oci) from host files, for `ctr images import`.
//
//	ocimage -name registry.k8s.io/pause:3.10 -o pause.tar \
//	    -entrypoint '["/pause"]' -add _output/bin/pause:/pause
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/oneinfra/oneinfra/test/images/oci"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ocimage:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		img             oci.Image
		out             = flag.String("o", "", "output tarball (required)")
		entrypoint, cmd = flag.String("entrypoint", "", "entrypoint as a JSON array"), flag.String("cmd", "", "command as a JSON array")
		env, adds, dirs list
		rootfs          list
		links           list
	)
	flag.StringVar(&img.Name, "name", "", "full image reference (required)")
	flag.StringVar(&img.WorkingDir, "workdir", "", "working directory")
	flag.StringVar(&img.User, "user", "", "user")
	flag.StringVar(&img.StopSignal, "stop-signal", "", "stop signal, for example SIGUSR1")
	flag.BoolVar(&img.NoBase, "no-base", false, "leave out /tmp, /etc/passwd, /etc/group, /etc/nsswitch.conf")
	flag.Var(&env, "env", "KEY=VALUE (repeatable)")
	flag.Var(&adds, "add", "HOSTFILE:IMAGEPATH[:MODE] copies a file, symlinks followed (repeatable)")
	flag.Var(&dirs, "mkdir", "IMAGEPATH[:MODE] adds a directory (repeatable)")
	flag.Var(&links, "symlink", "IMAGEPATH:TARGET adds a symlink (repeatable)")
	flag.Var(&rootfs, "rootfs", "HOSTDIR[:IMAGEDIR] adds a directory tree (repeatable)")
	flag.Parse()
	if img.Name == "" || *out == "" || flag.NArg() != 0 {
		flag.Usage()
		return fmt.Errorf("-name and -o are required")
	}
	for _, s := range []struct {
		flag string
		dst  *[]string
	}{{*entrypoint, &img.Entrypoint}, {*cmd, &img.Cmd}} {
		if s.flag != "" {
			if err := json.Unmarshal([]byte(s.flag), s.dst); err != nil {
				return fmt.Errorf("%q is not a JSON array of strings: %w", s.flag, err)
			}
		}
	}
	img.Env = env
	for _, r := range rootfs {
		dir, prefix, _ := strings.Cut(r, ":")
		if prefix == "" {
			prefix = "/"
		}
		files, err := oci.RootFS(dir, prefix)
		if err != nil {
			return err
		}
		img.Files = append(img.Files, files...)
	}
	for _, a := range adds {
		parts := strings.Split(a, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("-add %q: want HOSTFILE:IMAGEPATH[:MODE]", a)
		}
		f := oci.File{Source: parts[0], Path: parts[1]}
		if len(parts) == 3 {
			m, err := parseMode(parts[2])
			if err != nil {
				return fmt.Errorf("-add %q: %w", a, err)
			}
			f.Mode = m
		}
		img.Files = append(img.Files, f)
	}
	for _, d := range dirs {
		p, m, _ := strings.Cut(d, ":")
		f := oci.File{Path: p, Dir: true}
		if m != "" {
			mode, err := parseMode(m)
			if err != nil {
				return fmt.Errorf("-mkdir %q: %w", d, err)
			}
			f.Mode = mode
		}
		img.Files = append(img.Files, f)
	}
	for _, l := range links {
		p, target, ok := strings.Cut(l, ":")
		if !ok {
			return fmt.Errorf("-symlink %q: want IMAGEPATH:TARGET", l)
		}
		img.Files = append(img.Files, oci.File{Path: p, Link: target})
	}
	digest, err := oci.WriteFile(img, *out)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", *out, img.Name, digest)
	return nil
}

func parseMode(s string) (fs.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("mode %q is not octal", s)
	}
	m := fs.FileMode(v).Perm()
	if v&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	if v&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if v&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	return m, nil
}
