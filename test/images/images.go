// Package images names the container images that `make images` builds for
// tests and the lab (no registry is reachable there): the list lives in
// images.txt, read by images.mk and embedded here.
package images

import (
	_ "embed"
	"fmt"
	"path/filepath"
	"strings"
)

//go:embed images.txt
var list string

// Image is one entry of images.txt.
type Image struct {
	// Key is the short name, also the tarball's base name (KEY.tar).
	Key string
	// Ref is the full reference the image is imported under.
	Ref string
}

// Tarball is the image's file in an images output directory.
func (i Image) Tarball(dir string) string { return filepath.Join(dir, i.Key+".tar") }

// All returns the images in the order of images.txt.
func All() []Image {
	var out []Image
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		out = append(out, Image{Key: f[0], Ref: f[1]})
	}
	return out
}

// Get returns the image of a key; it panics on an unknown key (a typo in a
// test, not a runtime condition).
func Get(key string) Image {
	for _, i := range All() {
		if i.Key == key {
			return i
		}
	}
	panic(fmt.Sprintf("images: no image %q in images.txt", key))
}

// Ref returns the reference of a key, for example Ref("pause") is
// "registry.k8s.io/pause:3.10".
func Ref(key string) string { return Get(key).Ref }
