package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/agent/keystore"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// keyGrace is how long a key made here is kept before any certificate the
// coordinator holds is for it: long enough for its request to be recorded
// and seen again in the assignment.
const keyGrace = 10 * time.Minute

// keyDir is where a component's private keys live (keystore).
func keyDir(paths host.Paths) keystore.Dir { return keystore.Dir(paths.KeyDir()) }

// withKeys returns the assignment with its certificates' private keys,
// made here. First it gives the coordinator a new key set when it holds
// no spare one for the component, and forgets the keys of certificates
// it holds no more. Until the coordinator has issued the certificates,
// the component waits (host.ErrWaiting).
func (a *Agent) withKeys(ctx context.Context, as *pb.Assignment, paths host.Paths) (*pb.Assignment, error) {
	dir := keyDir(paths)
	if len(as.KeyNames) > 0 {
		if !as.SpareKeys {
			a.submitKeys(ctx, as, dir)
		}
		if err := dir.Prune(as.KeyHashes, keyGrace, time.Now()); err != nil {
			a.logger.Warn("removing unused keys", "component", as.Component.Metadata.Name, "err", err)
		}
	}
	certs, err := dir.Complete(as.Certs)
	if err != nil {
		return as, err
	}
	for _, name := range as.KeyNames {
		if as.Certs[name] == nil {
			return as, fmt.Errorf("%w: for the coordinator to issue certificates for the keys made here", host.ErrWaiting)
		}
	}
	out := proto.Clone(as).(*pb.Assignment)
	out.Certs = certs
	return out, nil
}

// submitKeys makes a key per certificate of the component and gives the
// coordinator their certificate requests, for its next certificates.
func (a *Agent) submitKeys(ctx context.Context, as *pb.Assignment, dir keystore.Dir) {
	name := as.Component.Metadata.Name
	csrs, err := dir.New(name, as.KeyNames)
	if err != nil {
		a.logger.Error("making keys", "component", name, "err", err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err = a.api.SubmitKeys(cctx, &pb.SubmitKeysRequest{Hypervisor: a.cfg.Name, Component: name, CsrPem: csrs})
	switch {
	case status.Code(err) == codes.FailedPrecondition:
		// The coordinator has a spare set already (this assignment is
		// older than it) or the component is going: these keys go unused.
		a.logger.Debug("new keys not taken", "component", name, "err", err)
	case err != nil:
		a.logger.Warn("giving the coordinator new keys", "component", name, "err", err)
	default:
		a.logger.Info("gave the coordinator the public keys of the next certificates", "component", name, "keys", len(csrs))
	}
}
