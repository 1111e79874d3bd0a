package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func sealed(t *testing.T, key, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := Seal(&buf, key)
	if err != nil {
		t.Fatal(err)
	}
	// Written in odd pieces, as a stream would be.
	for p := plain; len(p) > 0; {
		n := min(len(p), 7777)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(key, data []byte) ([]byte, error) {
	r, err := Open(bytes.NewReader(data), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestSealOpen(t *testing.T) {
	key := make([]byte, KeySize)
	rand.Read(key)
	for _, size := range []int{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 5} {
		plain := make([]byte, size)
		rand.Read(plain)
		data := sealed(t, key, plain)
		if size > 16 && bytes.Contains(data, plain[:16]) {
			t.Fatalf("%d bytes: the sealed stream holds plaintext", size)
		}
		got, err := open(key, data)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: opened %d bytes, %v", size, len(got), err)
		}
	}

	plain := make([]byte, 2*chunkSize+100)
	rand.Read(plain)
	data := sealed(t, key, plain)
	other := make([]byte, KeySize)
	rand.Read(other)
	bad := map[string][]byte{
		"another key":    data,
		"cut short":      data[:len(data)-1],
		"cut at a chunk": data[:len(magic)+saltSize+4+chunkSize+16],
		"extended":       append(bytes.Clone(data), 0),
		"flipped":        func() []byte { b := bytes.Clone(data); b[len(b)/2] ^= 1; return b }(),
		"empty":          nil,
	}
	for what, b := range bad {
		k := key
		if what == "another key" {
			k = other
		}
		if _, err := open(k, b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", what, err)
		}
	}
}

func TestFileTarget(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := ParseTarget("s3://bucket/prefix?endpoint=127.0.0.1:1", Credentials{}); err == nil {
		t.Error("an s3 target without credentials was accepted")
	}
	for _, bad := range []string{"file://host/x", "file://relative", "/no/scheme", "file:///x?y=1"} {
		if _, err := ParseTarget(bad, Credentials{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	target, err := ParseTarget("file://"+dir, Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := target.Put(ctx, "c1/b1", bytes.NewReader([]byte("data")))
	if err != nil || n != 4 {
		t.Fatalf("Put: %d, %v", n, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "c1/b1"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stored file: %v %v", fi, err)
	}
	r, err := target.Get(ctx, "c1/b1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "data" {
		t.Errorf("Get: %q", b)
	}
	for _, name := range []string{"../x", "/etc/passwd", "c1/../../x", ""} {
		if _, err := target.Put(ctx, name, bytes.NewReader(nil)); err == nil {
			t.Errorf("Put(%q) accepted", name)
		}
	}
	if err := target.Delete(ctx, "c1/b1"); err != nil {
		t.Fatal(err)
	}
	if err := target.Delete(ctx, "c1/b1"); err != nil {
		t.Errorf("deleting again: %v", err)
	}
}
