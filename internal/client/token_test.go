package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestToken(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good", "abcdef.0123456789abcdef\n", 0o600)
	if tok, err := Token("", good); err != nil || tok != "abcdef.0123456789abcdef" {
		t.Errorf("from a file: %q %v", tok, err)
	}
	if tok, err := Token("x.y", ""); err != nil || tok != "x.y" {
		t.Errorf("from the flag: %q %v", tok, err)
	}
	for name, tc := range map[string]struct{ flag, file, want string }{
		"both":           {"x.y", good, "one or the other"},
		"world-readable": {"", file("open", "a.b", 0o644), "chmod 600"},
		"empty":          {"", file("empty", "\n", 0o600), "empty"},
		"missing":        {"", filepath.Join(dir, "nope"), "--token-file"},
	} {
		if _, err := Token(tc.flag, tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}
