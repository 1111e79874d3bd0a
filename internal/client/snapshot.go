package client

import (
	"context"
	"io"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// SnapshotChunkSize is the size of the pieces a snapshot is streamed in.
const SnapshotChunkSize = 1 << 20

// SendChunks streams data in pieces of SnapshotChunkSize; the first
// carries the options of opts (force, dry_run), if any.
func SendChunks(data []byte, opts *pb.SnapshotChunk, send func(*pb.SnapshotChunk) error) error {
	for first := true; len(data) > 0; first = false {
		n := min(len(data), SnapshotChunkSize)
		c := &pb.SnapshotChunk{Data: data[:n]}
		if first && opts != nil {
			c.Force, c.DryRun = opts.Force, opts.DryRun
		}
		if err := send(c); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// SaveSnapshot is `snapshot save`: the coordinator's state, sealed.
func SaveSnapshot(ctx context.Context, op pb.OperatorClient) ([]byte, error) {
	stream, err := op.SnapshotSave(ctx, &pb.SnapshotSaveRequest{})
	if err != nil {
		return nil, err
	}
	var data []byte
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, err
		}
		data = append(data, chunk.Data...)
	}
}

// RestoreSnapshot is `snapshot restore` with opts (force, dry_run).
func RestoreSnapshot(ctx context.Context, op pb.OperatorClient, data []byte, opts *pb.SnapshotChunk) (*pb.SnapshotRestoreResponse, error) {
	stream, err := op.SnapshotRestore(ctx)
	if err != nil {
		return nil, err
	}
	if err := SendChunks(data, opts, stream.Send); err != nil {
		return nil, err
	}
	return stream.CloseAndRecv()
}
