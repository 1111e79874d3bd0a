package keyring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpen(t *testing.T) {
	k, err := New()
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("-----BEGIN EC PRIVATE KEY----- secret")
	sealed := k.Seal(plain, "raft-log")
	if bytes.Contains(sealed, []byte("PRIVATE KEY")) {
		t.Fatal("sealed data holds the plaintext")
	}
	if again := k.Seal(plain, "raft-log"); bytes.Equal(again, sealed) {
		t.Error("two seals of the same data are equal: the nonce is not fresh")
	}
	got, err := k.Open(sealed, "raft-log")
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}

	// Every byte flipped, every truncation and another use are refused.
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x01
		if _, err := k.Open(bad, "raft-log"); err == nil {
			t.Fatalf("byte %d flipped: opened", i)
		}
	}
	for n := range len(sealed) {
		if _, err := k.Open(sealed[:n], "raft-log"); !errors.Is(err, ErrTampered) {
			t.Fatalf("cut to %d bytes: %v, want ErrTampered", n, err)
		}
	}
	if _, err := k.Open(sealed, "snapshot"); !errors.Is(err, ErrTampered) {
		t.Errorf("opened for another use: %v", err)
	}

	other, _ := New()
	if _, err := other.Open(sealed, "raft-log"); !errors.Is(err, ErrOtherKey) {
		t.Errorf("another keyring: %v, want ErrOtherKey", err)
	}
}

func TestFile(t *testing.T) {
	k, _ := New()
	path := filepath.Join(t.TempDir(), FileName)
	if err := k.Write(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	loaded, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.ID() != k.ID() {
		t.Fatalf("loaded key %s, wrote %s", loaded.ID(), k.ID())
	}
	if got, err := loaded.Open(k.Seal([]byte("x"), "u"), "u"); err != nil || string(got) != "x" {
		t.Fatalf("a loaded keyring does not open what the original sealed: %q %v", got, err)
	}
	for _, bad := range []string{"", "oneinfra-keyring-v1\n", "oneinfra-keyring-v1\nzz 00\n", "other\n01020304 " + string(bytes.Repeat([]byte("00"), 32))} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
