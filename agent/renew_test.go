package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/coordinator"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// TestAgentRenewsItsCertificates: with certificates of seconds, the agent
// renews its own and its join endpoint's once due, for keys made here,
// keeps them, and goes on calling the coordinator with the new one.
func TestAgentRenewsItsCertificates(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := coordinator.Start(ctx, coordinator.Config{ID: "s1", DataDir: filepath.Join(dir, "coord"), Bootstrap: true,
		APIAddr: freeAddr(t), RaftAddr: freeAddr(t), Advertise: "127.0.0.1", Logger: quiet, CertValidity: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	conf, err := client.Load(filepath.Join(dir, "coord", coordinator.AdminConfFile))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial(conf.Members(), []byte(conf.CertificateAuthority), conf.KeyPair())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	op := pb.NewOperatorClient(conn)
	var tok *pb.CreateTokenResponse
	testutil.Eventually(t, 20*time.Second, "token", func() (err error) {
		tok, err = op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: "hypervisor"})
		return err
	})
	a, err := New(ctx, Config{Name: "pub-1", Address: "127.0.0.1", Coordinators: []string{srv.APIAddr()}, Token: tok.Token, CAHash: tok.CaHash,
		Public: true, PublicAddress: "127.0.0.2", CRIEndpoint: containerd.Start(t).Endpoint(), DataDir: filepath.Join(dir, "agent"),
		RootDir: filepath.Join(dir, "root"), PortRange: "30000-30099", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	join, err := a.joinCertificate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.joinCert.Store(join)
	own, joinSerial := a.id.cert.Leaf().SerialNumber.String(), join.Leaf().SerialNumber.String()
	if err := a.renewIdentity(ctx); err != nil || a.id.cert.Leaf().SerialNumber.String() != own {
		t.Fatalf("renewed before due: %v", err)
	}
	time.Sleep(time.Until(a.id.cert.Leaf().NotAfter) - 2*time.Second) // due at 2/3, valid until the end
	if err := a.renewIdentity(ctx); err != nil {
		t.Fatal(err)
	}
	a.renewJoinCertificate(ctx)
	if a.id.cert.Leaf().SerialNumber.String() == own || join.Leaf().SerialNumber.String() == joinSerial {
		t.Fatal("the agent's or the join endpoint's certificate was not renewed")
	}
	kept, err := loadIdentity(filepath.Join(dir, "agent"))
	if err != nil || kept.cert.Leaf().SerialNumber.String() == own {
		t.Errorf("the renewed identity is not kept: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "agent", "join-endpoint", "tls.crt")); !bytes.Equal(b, join.KeyPair().CertPem) {
		t.Error("the renewed join endpoint certificate is not kept")
	}
	// The old certificates have expired: only the new one can call.
	time.Sleep(3 * time.Second)
	if _, err := a.api.GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: "pub-1"}); err != nil {
		t.Errorf("a call with the renewed certificate: %v", err)
	}
}
