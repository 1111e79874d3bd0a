package coordinator

import (
	"bufio"
	"bytes"
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

// SnapshotChunkSize is the size of the pieces a snapshot is streamed in.
const SnapshotChunkSize = 1 << 20

// SendChunks streams data in pieces of SnapshotChunkSize.
func SendChunks(data []byte, send func(*pb.SnapshotChunk) error) error {
	for len(data) > 0 {
		n := min(len(data), SnapshotChunkSize)
		if err := send(&pb.SnapshotChunk{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// chunkReceiver is the receiving side of a snapshot stream.
type chunkReceiver interface {
	Recv() (*pb.SnapshotChunk, error)
}

// receiveChunks reads a streamed snapshot to its end.
func receiveChunks(r chunkReceiver) ([]byte, error) {
	var buf bytes.Buffer
	for {
		c, err := r.Recv()
		if err == io.EOF {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		buf.Write(c.Data)
	}
}
