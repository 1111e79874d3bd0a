package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/oneinfra/oneinfra/coordinator"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/renewal"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// callTimeout bounds one CLI call, failover to another server included.
const callTimeout = 30 * time.Second

// session is a connection to the coordinator with the operator's
// credentials.
type session struct {
	conn    *grpc.ClientConn
	op      pb.OperatorClient
	members *client.Members
	path    string
	conf    *client.Config
	stale   bool
}

func (g *globals) connect() (*session, error) {
	path := client.Path(g.config)
	conf, err := client.Load(path)
	if err != nil {
		return nil, err
	}
	s := &session{path: path, conf: conf, stale: g.stale}
	if err := s.dial(); err != nil {
		return nil, err
	}
	if renewal.DuePEM([]byte(conf.ClientCertificate), time.Now()) {
		if err := s.renewCredentials(); err != nil {
			fmt.Fprintf(os.Stderr, "warning: renewing the credentials in %s: %v\n", path, err)
		}
	}
	return s, nil
}

// dial connects with the credentials file's certificate. Every successful
// call lists the members: the file learns them, so that the next command
// reaches any of them when the one it knew is down. Failing to write it
// is no error for the command.
func (s *session) dial() error {
	members := s.conf.Members()
	members.OnChange(func(addrs []string, ids map[string]string) {
		s.conf.Servers, s.conf.ServerIDs = addrs, ids
		_ = s.conf.Write(s.path)
	})
	conn, err := client.Dial(members, []byte(s.conf.CertificateAuthority), s.conf.KeyPair())
	if err != nil {
		return err
	}
	s.conn, s.op, s.members = conn, pb.NewOperatorClient(conn), members
	return nil
}

// keepTrust renews the credentials file once a server said the
// coordinator trust generation moved (a CA rotation's stage: the CAs to
// trust, the CA that signs): the file then holds them, and a certificate
// of the CA that signs. An operator who runs any command during a
// rotation so moves with it.
func (s *session) keepTrust() {
	gen, ok := s.members.TrustGeneration()
	if !ok || gen <= s.conf.TrustGeneration { // a lagging server's older one too
		return
	}
	if err := s.renewCredentials(); err != nil {
		fmt.Fprintf(os.Stderr, "warning: taking the coordinator's new CAs into %s: %v\n", s.path, err)
	}
}

// renewCredentials renews the credentials file's certificate, past two
// thirds of its life or for a CA rotation, for a key made here, with the
// CAs to trust; the command then goes on with the new ones.
func (s *session) renewCredentials() error {
	cert, err := tlsutil.ParseCertPEM([]byte(s.conf.ClientCertificate))
	if err != nil {
		return err
	}
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return err
	}
	csr, err := tlsutil.CreateCSR(key, cert.Subject.CommonName, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := s.op.RenewCredentials(ctx, &pb.RenewCertificateRequest{CsrPem: csr})
	if err != nil {
		return err
	}
	s.conf.ClientCertificate, s.conf.ClientKey = string(resp.CertPem), string(keyPEM)
	if len(resp.CaPem) > 0 {
		s.conf.CertificateAuthority, s.conf.TrustGeneration = string(resp.CaPem), resp.TrustGeneration
	}
	if err := s.conf.Write(s.path); err != nil {
		return err
	}
	s.conn.Close()
	return s.dial()
}

func (s *session) close() {
	s.keepTrust()
	s.conn.Close()
}

// ctx is the context of one call.
func (s *session) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	if s.stale {
		parent = metadata.AppendToOutgoingContext(parent, coordinator.StaleHeader, "true")
	}
	return context.WithTimeout(parent, callTimeout)
}

// call connects, runs f with the context of one call, and disconnects.
func (g *globals) call(cmd *cobra.Command, f func(ctx context.Context, s *session) error) error {
	s, err := g.connect()
	if err != nil {
		return err
	}
	defer s.close()
	ctx, cancel := s.ctx(cmd.Context())
	defer cancel()
	return f(ctx, s)
}
