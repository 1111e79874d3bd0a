package coordinator

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/oneinfra/oneinfra/coordinator/keyring"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
)

// Every snapshot file, Raft's and `snapshot save`'s, starts with one of
// these: v2 seals the state with the keyring; v1, of servers older than
// the keyring, is plain.
const (
	snapshotMagicV1 = "oneinfra-snapshot-v1\n"
	snapshotMagic   = "oneinfra-snapshot-v2\n"
	snapshotUse     = "snapshot" // its keyring use
)

// EncodeSnapshot writes a snapshot in the on-disk format, sealed with keys.
func EncodeSnapshot(w io.Writer, snap *pb.Snapshot, keys *keyring.Keyring) error {
	b, err := proto.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encoding snapshot: %w", err)
	}
	if _, err := io.WriteString(w, snapshotMagic); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	if _, err := w.Write(keys.Seal(b, snapshotUse)); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return nil
}

// DecodeSnapshot reads a snapshot written by EncodeSnapshot with keys.
func DecodeSnapshot(r io.Reader, keys *keyring.Keyring) (*pb.Snapshot, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || (string(magic) != snapshotMagic && string(magic) != snapshotMagicV1) {
		return nil, fmt.Errorf("not a oneinfra snapshot")
	}
	b, err := io.ReadAll(br)
	if err != nil {
		return nil, fmt.Errorf("reading snapshot: %w", err)
	}
	if string(magic) == snapshotMagic {
		if b, err = keys.Open(b, snapshotUse); err != nil {
			return nil, fmt.Errorf("unsealing snapshot: %w", err)
		}
	}
	snap := &pb.Snapshot{}
	if err := proto.Unmarshal(b, snap); err != nil {
		return nil, fmt.Errorf("decoding snapshot: %w", err)
	}
	return snap, nil
}

// chunkReceiver is the receiving side of a snapshot stream.
type chunkReceiver interface {
	Recv() (*pb.SnapshotChunk, error)
}

// receiveChunks reads a streamed snapshot to its end, and the first
// chunk's options (without its data).
func receiveChunks(r chunkReceiver) ([]byte, *pb.SnapshotChunk, error) {
	var buf bytes.Buffer
	opts := &pb.SnapshotChunk{}
	for first := true; ; first = false {
		c, err := r.Recv()
		if err == io.EOF {
			return buf.Bytes(), opts, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if first {
			opts.Force, opts.DryRun = c.Force, c.DryRun
		}
		buf.Write(c.Data)
	}
}
