package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
)

// The keys of cluster components' certificates are made by the agent of
// the hypervisor that runs them, never by the coordinator: an agent keeps
// a spare set given ahead (ComponentCerts.spare_keys, one certificate
// request per certificate name); every set the coordinator issues to the
// component (its first, a renewal, a CA rotation's) is for those keys and
// uses them up, and the agent then gives the next. The private keys stay
// on the hypervisor.

// maxKeyRequest bounds one certificate request of SubmitKeys.
const maxKeyRequest = 4 << 10

// SubmitKeys records the spare keys of one of the calling hypervisor's
// components, once each was shown to be held (its request's signature).
func (a *agentAPI) SubmitKeys(ctx context.Context, req *pb.SubmitKeysRequest) (*pb.SubmitKeysResponse, error) {
	if err := checkSelf(ctx, req.Hypervisor); err != nil {
		return nil, err
	}
	st := a.s.State()
	comp := st.Component(nil, req.Component)
	switch {
	case comp == nil:
		return nil, fmt.Errorf("component %q: %w", req.Component, state.ErrNotFound)
	case comp.Spec.Hypervisor != req.Hypervisor:
		return nil, fmt.Errorf("component %q is not on hypervisor %q: %w", req.Component, req.Hypervisor, errDenied)
	case comp.Metadata.DeletionTimestamp != nil || comp.Spec.Orphaned:
		return nil, fmt.Errorf("component %q is being removed: it takes no new keys: %w", req.Component, state.ErrConflict)
	}
	names := pki.KeyNames(comp.Spec.Role)
	if len(names) == 0 {
		return nil, fmt.Errorf("component %q (%s) has no certificates of its own: %w", req.Component, comp.Spec.Role, errInvalid)
	}
	keys, err := submittedKeys(req.CsrPem, names)
	if err != nil {
		return nil, err
	}
	certs := st.ComponentCerts(nil, req.Component)
	if len(certs.GetSpareKeys()) > 0 {
		return nil, fmt.Errorf("component %q has spare keys already: %w", req.Component, state.ErrConflict)
	}
	for name, pub := range keys {
		if keysUsed(certs, map[string][]byte{name: pub}) {
			return nil, fmt.Errorf("csr_pem[%s]: the key is in use already: a new one is needed: %w", name, errInvalid)
		}
	}
	if _, err := a.s.raftApply(SubmitKeysType, &pb.SubmitKeysCommand{Component: req.Component, Hypervisor: req.Hypervisor, Keys: keys}); err != nil {
		return nil, err
	}
	return &pb.SubmitKeysResponse{}, nil
}

// submittedKeys checks that csrs hold exactly one certificate request per
// name, each signed by a distinct key fit for a certificate, and returns
// their public keys (PKIX DER) by name.
func submittedKeys(csrs map[string][]byte, names []string) (map[string][]byte, error) {
	for name := range csrs {
		if !slices.Contains(names, name) {
			return nil, fmt.Errorf("csr_pem: %q is not a certificate of the component (want %v): %w", name, names, errInvalid)
		}
	}
	keys := make(map[string][]byte, len(names))
	seen := map[string]string{}
	for _, name := range names {
		csr := csrs[name]
		if len(csr) == 0 {
			return nil, fmt.Errorf("csr_pem: no request for %q (want one for each of %v): %w", name, names, errInvalid)
		}
		if len(csr) > maxKeyRequest {
			return nil, fmt.Errorf("csr_pem[%s]: %d bytes, over %d: %w", name, len(csr), maxKeyRequest, errInvalid)
		}
		pub, err := tlsutil.CSRPublicKey(csr)
		if err != nil {
			return nil, fmt.Errorf("csr_pem[%s]: %v: %w", name, err, errInvalid)
		}
		h := tlsutil.PublicKeyHash(pub)
		if other, dup := seen[h]; dup {
			return nil, fmt.Errorf("csr_pem[%s]: the same key as %s: each certificate needs its own: %w", name, other, errInvalid)
		}
		seen[h] = name
		keys[name] = pub
	}
	return keys, nil
}

// applySubmitKeys records a component's spare keys while it is still on
// the hypervisor that gave them and has none.
func (f *FSM) applySubmitKeys(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.SubmitKeysCommand)
	comp := txn.Component(cmd.Component)
	if comp == nil || comp.Spec.Hypervisor != cmd.Hypervisor || comp.Metadata.DeletionTimestamp != nil {
		return fmt.Errorf("component %q on hypervisor %q: %w", cmd.Component, cmd.Hypervisor, state.ErrNotFound)
	}
	next := &pb.ComponentCerts{Component: cmd.Component}
	if cur := txn.ComponentCerts(cmd.Component); cur != nil {
		if len(cur.SpareKeys) > 0 {
			return fmt.Errorf("component %q has spare keys already: %w", cmd.Component, state.ErrConflict)
		}
		next = proto.Clone(cur).(*pb.ComponentCerts)
	}
	next.SpareKeys = cmd.Keys
	txn.UpsertComponentCerts(next)
	return nil
}

// keepSpareKeys gives next, a component's certificates about to replace
// cur, the spare keys cur holds, unless next was issued for them: a spare
// set is used once. What next itself says of them is ignored (the leader
// may have planned it before the agent gave them).
func keepSpareKeys(cur, next *pb.ComponentCerts) {
	next.SpareKeys = nil
	if spare := cur.GetSpareKeys(); len(spare) > 0 && !keysUsed(next, spare) {
		next.SpareKeys = spare
	}
}

// keysUsed reports whether a certificate of certs, in use or renewed, is
// for a key of keys (PKIX DER by certificate name).
func keysUsed(certs *pb.ComponentCerts, keys map[string][]byte) bool {
	for _, set := range []map[string]*pb.KeyPair{certs.GetCerts(), certs.GetRenewed()} {
		for name, kp := range set {
			pub := keys[name]
			if pub == nil {
				continue
			}
			if cert, err := tlsutil.ParseCertPEM(kp.GetCertPem()); err == nil && bytes.Equal(cert.RawSubjectPublicKeyInfo, pub) {
				return true
			}
		}
	}
	return false
}

// withKeys tells an assignment which of its certificates' keys the agent
// makes, whether the coordinator holds a spare set, and which keys the
// agent keeps: those of every certificate the coordinator holds for the
// component (in use, renewed or spare).
func withKeys(as *pb.Assignment, role string, certs *pb.ComponentCerts) {
	as.KeyNames = pki.KeyNames(role)
	as.SpareKeys = len(certs.GetSpareKeys()) > 0
	hashes := map[string]bool{}
	for _, pub := range certs.GetSpareKeys() {
		hashes[tlsutil.PublicKeyHash(pub)] = true
	}
	for _, set := range []map[string]*pb.KeyPair{certs.GetCerts(), certs.GetRenewed()} {
		for _, kp := range set {
			if cert, err := tlsutil.ParseCertPEM(kp.GetCertPem()); err == nil {
				hashes[tlsutil.PublicKeyHash(cert.RawSubjectPublicKeyInfo)] = true
			}
		}
	}
	as.KeyHashes = make([]string, 0, len(hashes))
	for h := range hashes {
		as.KeyHashes = append(as.KeyHashes, h)
	}
	sort.Strings(as.KeyHashes)
}
