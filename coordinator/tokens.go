package coordinator

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"regexp"
	"time"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Token kinds.
const (
	TokenHypervisor = "hypervisor"
	TokenServer     = "server"
	TokenWorker     = "worker"
)

// Token lifetimes: DefaultTokenTTL unless --ttl says otherwise, at most
// MaxTokenTTL.
const (
	DefaultTokenTTL = 24 * time.Hour
	MaxTokenTTL     = 720 * time.Hour
)

// defaultUses is how many times a token of a kind may be used unless
// --uses says otherwise: once for servers and hypervisors, unlimited
// (0) within the ttl for workers, which join by the fleet.
func defaultUses(kind string) uint32 {
	if kind == TokenWorker {
		return 0
	}
	return 1
}

// tokenFormat is "ID.SECRET", like kubeadm's bootstrap tokens.
var tokenFormat = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// randomString draws n characters of tokenAlphabet uniformly: bytes past
// the largest multiple of the alphabet's size are thrown away.
func randomString(n int) (string, error) {
	limit := byte(256 - 256%len(tokenAlphabet))
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			if b < limit && len(out) < n {
				out = append(out, tokenAlphabet[int(b)%len(tokenAlphabet)])
			}
		}
	}
	return string(out), nil
}

// newToken makes a token; only the hash of its secret is kept.
func newToken(kind, cluster string, ttl time.Duration, maxUses uint32, name string, now time.Time) (string, *pb.Token, error) {
	id, err := randomString(6)
	if err != nil {
		return "", nil, err
	}
	secret, err := randomString(16)
	if err != nil {
		return "", nil, err
	}
	return id + "." + secret, &pb.Token{
		Id: id, Kind: kind, Cluster: cluster, Name: name, MaxUses: maxUses,
		Created: timestamppb.New(now), Expires: timestamppb.New(now.Add(ttl)),
		SecretHash: hashSecret(id, secret),
	}, nil
}

func hashSecret(id, secret string) []byte {
	h := sha256.Sum256([]byte(id + "." + secret))
	return h[:]
}

// checkToken finds a stored token matching the presented one and checks it
// may be used for kind now. Its error says why a token is refused.
func checkToken(lookup func(id string) *pb.Token, presented, kind string, now time.Time) (*pb.Token, error) {
	m := tokenFormat.FindStringSubmatch(presented)
	if m == nil {
		return nil, fmt.Errorf("token: malformed (want ID.SECRET, 6 and 16 lowercase letters or digits): %w", errDenied)
	}
	tok := lookup(m[1])
	if tok == nil || subtle.ConstantTimeCompare(tok.SecretHash, hashSecret(m[1], m[2])) != 1 {
		return nil, fmt.Errorf("token %s: unknown or wrong secret: %w", m[1], errDenied)
	}
	switch {
	case tok.Revoked:
		return nil, fmt.Errorf("token %s: revoked: %w", tok.Id, errDenied)
	case !now.Before(tok.Expires.AsTime()):
		return nil, fmt.Errorf("token %s: expired at %s: %w", tok.Id, tok.Expires.AsTime().Format(time.RFC3339), errDenied)
	case tok.Kind != kind:
		return nil, fmt.Errorf("token %s: is a %s token, not a %s token: %w", tok.Id, tok.Kind, kind, errDenied)
	case tok.MaxUses > 0 && tok.Uses >= tok.MaxUses:
		return nil, fmt.Errorf("token %s: used up (%d of %d uses): %w", tok.Id, tok.Uses, tok.MaxUses, errDenied)
	}
	return tok, nil
}

// tokenExpired reports whether a token has expired at now; such tokens
// are pruned. One used up stays until then, so that using it again is
// refused as used up rather than unknown.
func tokenExpired(t *pb.Token, now time.Time) bool {
	return !now.Before(t.Expires.AsTime())
}
