package manifest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// ReadSources reads and decodes the manifests of apply -f: each path is a
// file, a directory (its *.yaml, *.yml and *.json files, sorted, not
// recursive) or "-" for stdin. Sources are named by their paths ("stdin"
// for stdin). Like Decode, it checks everything as a whole, across all
// sources, and returns no resources on any error.
func ReadSources(paths []string, stdin io.Reader) ([]*pb.Resource, error) {
	if len(paths) == 0 {
		return nil, errors.New("no manifest given")
	}
	var out []*pb.Resource
	var errs []error
	for _, p := range paths {
		files, err := expand(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range files {
			source, data, err := read(f, stdin)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			res, err := decodeSource(source, data)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, res...)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := checkSet(out); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no resources in %s", strings.Join(paths, ", "))
	}
	return out, nil
}

// expand turns a path into the files to read: itself, or the manifests of
// a directory.
func expand(p string) ([]string, error) {
	if p == "-" {
		return []string{p}, nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{p}, nil
	}
	entries, err := os.ReadDir(p) // sorted by name
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no .yaml, .yml or .json files", p)
	}
	return files, nil
}

// read returns the name and content of one source.
func read(p string, stdin io.Reader) (string, []byte, error) {
	if p == "-" {
		if stdin == nil {
			return "", nil, errors.New("stdin: not available")
		}
		data, err := io.ReadAll(stdin)
		if err != nil {
			return "", nil, fmt.Errorf("stdin: %w", err)
		}
		return "stdin", data, nil
	}
	data, err := os.ReadFile(p)
	return p, data, err
}
