package renewal

import (
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
)

func TestDue(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	ca, err := tlsutil.NewCA("ca", 10*8760*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(validity time.Duration) []byte {
		kp, err := tlsutil.Issue(ca, tlsutil.CertOptions{CommonName: "x", Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: validity}, now)
		if err != nil {
			t.Fatal(err)
		}
		return kp.CertPem
	}
	for _, tc := range []struct {
		name     string
		validity time.Duration
		at       time.Duration // since issue
		due      bool
	}{
		{"a year, fresh", 8760 * time.Hour, 0, false},
		{"a year, just before 2/3", 8760 * time.Hour, 5840*time.Hour - time.Minute, false},
		{"a year, at 2/3", 8760 * time.Hour, 5840 * time.Hour, true},
		// tlsutil backdates NotBefore by 5 minutes: a 3-minute certificate
		// is renewed 2 minutes after its issue, not at once.
		{"three minutes, after one", 3 * time.Minute, time.Minute, false},
		{"three minutes, after two", 3 * time.Minute, 2 * time.Minute, true},
		{"expired", time.Hour, 2 * time.Hour, true},
		// A clock running behind the issuer's by less than the skew still
		// sees a fresh certificate as fresh.
		{"a clock 4 minutes behind", time.Hour, -4 * time.Minute, false},
	} {
		if got := DuePEM(issue(tc.validity), now.Add(tc.at)); got != tc.due {
			t.Errorf("%s: due %v, want %v", tc.name, got, tc.due)
		}
	}
	if !DuePEM([]byte("not a certificate"), now) {
		t.Error("an unreadable certificate is not due")
	}
	// A certificate not backdated (another issuer's): counted from its
	// NotBefore when the skew would pass its expiry.
	nb, na := now, now.Add(3*time.Minute)
	if at := At(nb, na); !at.Equal(now.Add(2 * time.Minute)) {
		t.Errorf("At of a short certificate not backdated: %v", at)
	}
}
