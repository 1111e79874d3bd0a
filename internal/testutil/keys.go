package testutil

import (
	"crypto/x509"
	"testing"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
)

// KeySet makes a key per name, as an agent does for its component's
// certificates: the public keys (PKIX DER) and the PEM private keys, by
// name.
func KeySet(t testing.TB, names []string) (pubs, privs map[string][]byte) {
	t.Helper()
	pubs, privs = map[string][]byte{}, map[string][]byte{}
	for _, name := range names {
		key, keyPEM, err := tlsutil.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		pubs[name], privs[name] = der, keyPEM
	}
	return pubs, privs
}
