// Package keyring seals the coordinator's replicated state at rest. Raft
// log entries, Raft snapshots and `snapshot save` files hold every CA and
// leaf key, token hash and secret of every cluster; each is encrypted
// (AES-256-GCM) with a key that is never in the replicated state: it is in
// DATA-DIR/keyring (0600) on every server, made at --bootstrap and handed
// to joining servers over their authenticated join.
//
// Sealed data names the key that sealed it, so data of another
// coordinator (another keyring) is told apart from data tampered with.
package keyring

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
)

// FileName is the keyring's file in a server's data dir.
const FileName = "keyring"

const (
	fileHeader = "oneinfra-keyring-v1"
	keySize    = 32
	idSize     = 4
	// sealVersion is the first byte of sealed data.
	sealVersion = 1
)

// Errors Open returns.
var (
	// ErrOtherKey is data sealed with another keyring's key: another
	// coordinator's.
	ErrOtherKey = errors.New("sealed with another keyring")
	// ErrTampered is data that is not what this keyring sealed: changed,
	// cut short, or sealed for another use.
	ErrTampered = errors.New("sealed data altered or truncated")
)

// Keyring holds the key the state is sealed with.
type Keyring struct {
	id   []byte // random: names the key in what it seals
	key  []byte
	aead cipher.AEAD
}

// New makes a keyring with a fresh random key.
func New() (*Keyring, error) {
	b := make([]byte, idSize+keySize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("making the keyring: %w", err)
	}
	return fromBytes(b[:idSize:idSize], b[idSize:])
}

func fromBytes(id, key []byte) (*Keyring, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Keyring{id: id, key: key, aead: aead}, nil
}

// ID names the keyring's key (8 hex digits), for messages.
func (k *Keyring) ID() string { return hex.EncodeToString(k.id) }

// Marshal is the keyring in its file format.
func (k *Keyring) Marshal() []byte {
	return fmt.Appendf(nil, "%s\n%s %s\n", fileHeader, hex.EncodeToString(k.id), hex.EncodeToString(k.key))
}

// Parse reads a keyring in its file format.
func Parse(b []byte) (*Keyring, error) {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != fileHeader {
		return nil, errors.New("not a oneinfra keyring")
	}
	idHex, keyHex, ok := strings.Cut(lines[1], " ")
	id, err1 := hex.DecodeString(idHex)
	key, err2 := hex.DecodeString(keyHex)
	if !ok || err1 != nil || err2 != nil || len(id) != idSize || len(key) != keySize {
		return nil, errors.New("keyring: malformed key line")
	}
	return fromBytes(id, key)
}

// Load reads the keyring at path.
func Load(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Write writes the keyring at path, mode 0600.
func (k *Keyring) Write(path string) error {
	return tlsutil.WriteFileAtomic(path, k.Marshal(), 0o600)
}

// Seal encrypts plain for use (a fixed word: data sealed for one use does
// not open as another's): version, key ID, nonce, ciphertext and tag.
func (k *Keyring) Seal(plain []byte, use string) []byte {
	out := make([]byte, 0, 1+idSize+k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	out = append(out, sealVersion)
	out = append(out, k.id...)
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("keyring: reading random nonce: %v", err)) // crypto/rand never fails on Linux
	}
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, plain, k.aad(use))
}

// Open decrypts what Seal sealed for use.
func (k *Keyring) Open(sealed []byte, use string) ([]byte, error) {
	head := 1 + idSize + k.aead.NonceSize()
	if len(sealed) < head+k.aead.Overhead() || sealed[0] != sealVersion {
		return nil, ErrTampered
	}
	if id := sealed[1 : 1+idSize]; !bytes.Equal(id, k.id) {
		return nil, fmt.Errorf("%w (key %x, this server's is %s)", ErrOtherKey, id, k.ID())
	}
	plain, err := k.aead.Open(nil, sealed[1+idSize:head], sealed[head:], k.aad(use))
	if err != nil {
		return nil, ErrTampered
	}
	return plain, nil
}

// aad binds sealed data to its use and key.
func (k *Keyring) aad(use string) []byte {
	aad := make([]byte, 0, 1+idSize+len(use))
	aad = append(aad, sealVersion)
	aad = append(aad, k.id...)
	return append(aad, use...)
}
