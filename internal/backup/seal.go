// Package backup stores etcd backups: sealed as a stream with a cluster's
// backup key (so the store never sees plaintext and a multi-GB snapshot
// never sits in memory) in a backup target.
package backup

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// KeySize is the size of a cluster's backup key.
const KeySize = 32

// The sealed format: magic, a random salt from which the stream's own key
// is derived (HKDF-SHA256 of the cluster's key), then chunks of at most
// chunkSize plaintext bytes, each its ciphertext length (4 bytes, big
// endian) and AES-256-GCM ciphertext. A chunk's nonce is its number and
// whether it is the last: a stream cut short, reordered or extended does
// not open.
const (
	magic     = "oneinfra-backup-v1\n"
	saltSize  = 16
	chunkSize = 64 << 10
)

// ErrCorrupt is a sealed backup that does not open: tampered with, cut
// short, or sealed with another key.
var ErrCorrupt = errors.New("backup altered, truncated or sealed with another key")

func streamAEAD(key, salt []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("backup key: %d bytes, want %d", len(key), KeySize)
	}
	k, err := hkdf.Key(sha256.New, key, salt, "oneinfra backup stream", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func nonce(n uint64, last bool) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint64(b[:8], n)
	if last {
		b[11] = 1
	}
	return b
}

// sealer is the writing end of a sealed stream.
type sealer struct {
	w    io.Writer
	aead cipher.AEAD
	buf  []byte
	n    uint64
}

// Seal returns a writer that seals what is written to it into w; Close
// writes the last chunk (it does not close w).
func Seal(w io.Writer, key []byte) (io.WriteCloser, error) {
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	aead, err := streamAEAD(key, salt)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(w, magic); err != nil {
		return nil, err
	}
	if _, err := w.Write(salt); err != nil {
		return nil, err
	}
	return &sealer{w: w, aead: aead, buf: make([]byte, 0, chunkSize)}, nil
}

func (s *sealer) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		// A full chunk is written once more follows, so that Close
		// always has a last one to mark.
		if len(s.buf) == chunkSize {
			if err := s.flush(false); err != nil {
				return written, err
			}
		}
		n := copy(s.buf[len(s.buf):chunkSize], p)
		s.buf = s.buf[:len(s.buf)+n]
		p, written = p[n:], written+n
	}
	return written, nil
}

func (s *sealer) flush(last bool) error {
	ct := s.aead.Seal(nil, nonce(s.n, last), s.buf, nil)
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], uint32(len(ct)))
	if _, err := s.w.Write(size[:]); err != nil {
		return err
	}
	if _, err := s.w.Write(ct); err != nil {
		return err
	}
	s.n++
	s.buf = s.buf[:0]
	return nil
}

func (s *sealer) Close() error { return s.flush(true) }

// opener is the reading end of a sealed stream.
type opener struct {
	r    io.Reader
	aead cipher.AEAD
	buf  []byte // plaintext not read yet
	n    uint64
	done bool
}

// Open returns a reader of what Seal sealed into r. Reading returns
// ErrCorrupt where the stream does not open, and io.EOF only after its
// last chunk.
func Open(r io.Reader, key []byte) (io.Reader, error) {
	head := make([]byte, len(magic)+saltSize)
	if _, err := io.ReadFull(r, head); err != nil || string(head[:len(magic)]) != magic {
		return nil, fmt.Errorf("not a oneinfra backup: %w", ErrCorrupt)
	}
	aead, err := streamAEAD(key, head[len(magic):])
	if err != nil {
		return nil, err
	}
	return &opener{r: r, aead: aead}, nil
}

func (o *opener) Read(p []byte) (int, error) {
	for len(o.buf) == 0 {
		if o.done {
			return 0, io.EOF
		}
		if err := o.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, o.buf)
	o.buf = o.buf[n:]
	return n, nil
}

// next opens the next chunk, as the last one if its tag says so.
func (o *opener) next() error {
	var size [4]byte
	if _, err := io.ReadFull(o.r, size[:]); err != nil {
		return ErrCorrupt // cut before its last chunk
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < uint32(o.aead.Overhead()) || n > chunkSize+uint32(o.aead.Overhead()) {
		return ErrCorrupt
	}
	ct := make([]byte, n)
	if _, err := io.ReadFull(o.r, ct); err != nil {
		return ErrCorrupt
	}
	for _, last := range []bool{false, true} {
		if pt, err := o.aead.Open(nil, nonce(o.n, last), ct, nil); err == nil {
			o.buf, o.n, o.done = pt, o.n+1, last
			if last {
				// Nothing may follow the last chunk.
				if _, err := io.ReadFull(o.r, make([]byte, 1)); err == nil {
					return ErrCorrupt
				}
			}
			return nil
		}
	}
	return ErrCorrupt
}
