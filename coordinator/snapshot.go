package coordinator

import (
	"bufio"
	"fmt"
	"io"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
)

// snapshotMagic starts every snapshot file, Raft's and `snapshot save`'s.
const snapshotMagic = "oneinfra-snapshot-v1\n"

// EncodeSnapshot writes a snapshot in the on-disk format.
func EncodeSnapshot(w io.Writer, snap *pb.Snapshot) error {
	b, err := proto.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encoding snapshot: %w", err)
	}
	if _, err := io.WriteString(w, snapshotMagic); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return nil
}

// DecodeSnapshot reads a snapshot written by EncodeSnapshot.
func DecodeSnapshot(r io.Reader) (*pb.Snapshot, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, fmt.Errorf("not a oneinfra snapshot")
	}
	b, err := io.ReadAll(br)
	if err != nil {
		return nil, fmt.Errorf("reading snapshot: %w", err)
	}
	snap := &pb.Snapshot{}
	if err := proto.Unmarshal(b, snap); err != nil {
		return nil, fmt.Errorf("decoding snapshot: %w", err)
	}
	return snap, nil
}
