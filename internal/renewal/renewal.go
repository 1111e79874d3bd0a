// Package renewal decides when a certificate is renewed: once two thirds
// of its lifetime have passed, so that a renewal that fails has a third
// of the lifetime left to be tried again before anything stops.
//
// The lifetime counts from when the certificate was issued, not from its
// NotBefore, which tlsutil sets ClockSkew earlier (so that machines whose
// clocks run behind accept a new certificate at once): with lifetimes of
// minutes, as tests use, counting the skew would renew almost at once.
package renewal

import (
	"crypto/x509"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
)

// Issued is when a certificate valid from notBefore to notAfter was
// issued: notBefore plus tlsutil's backdating, never later than notAfter.
func Issued(notBefore, notAfter time.Time) time.Time {
	issued := notBefore.Add(tlsutil.ClockSkew)
	if issued.After(notAfter) {
		return notBefore
	}
	return issued
}

// At is when a certificate valid from notBefore to notAfter is due for
// renewal: two thirds of the way from its issue to its expiry.
func At(notBefore, notAfter time.Time) time.Time {
	issued := Issued(notBefore, notAfter)
	return issued.Add(notAfter.Sub(issued) * 2 / 3)
}

// Due reports whether cert is due for renewal at now; an expired one is.
func Due(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(At(cert.NotBefore, cert.NotAfter))
}

// DuePEM is Due for the first certificate of a PEM block; a certificate
// that cannot be read is due (it must be replaced).
func DuePEM(certPEM []byte, now time.Time) bool {
	cert, err := tlsutil.ParseCertPEM(certPEM)
	return err != nil || Due(cert, now)
}

// CheckEvery is how often a holder looks whether cert is due: a
// twentieth of its lifetime, between a second and 30 seconds, so that
// certificates of minutes (tests) are renewed in time too.
func CheckEvery(cert *x509.Certificate) time.Duration {
	d := cert.NotAfter.Sub(Issued(cert.NotBefore, cert.NotAfter)) / 20
	return min(max(d, time.Second), 30*time.Second)
}
