// Command testapp is the payload of the test image used by the CRI tests: a
// static program that prints what it is told, then sleeps until a signal or
// exits with a given code, and can answer HTTP or fetch a URL once.
//
//	testapp -print "hello" -exit 3 -after 100ms   # prints, then exits 3
//	testapp -http 127.0.0.1:8080                  # serves "ok" on every path
//	testapp -get http://10.244.1.5:8080/          # prints the body; exit 0 on 2xx
//	testapp -https :8443                          # an aggregated API server
//
// -https serves over TLS with a self-signed certificate made at start (an
// APIService with insecureSkipTLSVerify): /apis/GROUP/VERSION answers an
// APIResourceList with no resources, so the API server lists the group as
// available; every other path answers "ok".
//
// -get is for reachability checks (kubectl exec POD -- testapp -get URL): it
// makes one request (no retry, no proxy) within -timeout, prints the body on
// stdout and exits 0 on a 2xx status; otherwise it prints the error on
// stderr and exits 1.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var prints, eprints list
	flag.Var(&prints, "print", "line to print on stdout at start (repeatable)")
	flag.Var(&eprints, "stderr", "line to print on stderr at start (repeatable)")
	exit := flag.Int("exit", -1, "exit with this code (after -after) instead of running until a signal")
	after := flag.Duration("after", 0, "delay before -exit")
	httpAddr := flag.String("http", "", "serve \"ok\" over HTTP on this address")
	httpsAddr := flag.String("https", "", "serve as an aggregated API server over HTTPS (a self-signed certificate) on this address")
	getURL := flag.String("get", "", "fetch this URL once, print the body and exit: 0 on a 2xx status, 1 otherwise")
	timeout := flag.Duration("timeout", 5*time.Second, "time limit of -get (connection, headers and body)")
	flag.Parse()
	if *getURL != "" && (*httpAddr != "" || *httpsAddr != "" || *exit >= 0) {
		fmt.Fprintln(os.Stderr, "testapp: -get cannot be combined with -http, -https or -exit")
		os.Exit(2)
	}

	for _, p := range prints {
		fmt.Println(p)
	}
	for _, p := range eprints {
		fmt.Fprintln(os.Stderr, p)
	}
	if *getURL != "" {
		if err := get(*getURL, *timeout, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if *httpAddr != "" {
		go func() {
			err := http.ListenAndServe(*httpAddr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprintln(w, "ok")
			}))
			fmt.Fprintln(os.Stderr, "testapp: http:", err)
			os.Exit(2)
		}()
	}
	if *httpsAddr != "" {
		go func() {
			err := serveAPI(*httpsAddr)
			fmt.Fprintln(os.Stderr, "testapp: https:", err)
			os.Exit(2)
		}()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var timer <-chan time.Time
	if *exit >= 0 {
		timer = time.After(*after)
	}
	select {
	case s := <-sigs:
		fmt.Println("testapp: terminating on", s)
		os.Exit(0)
	case <-timer:
		fmt.Printf("testapp: exiting with code %d\n", *exit)
		os.Exit(*exit)
	}
}

// get makes one GET request of url within timeout and copies the body to
// out. It fails on a transport error, a timeout or a status other than 2xx
// (the error then holds the status and the start of the body).
func get(url string, timeout time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("-get %q: %w", url, err)
	}
	// Direct: a reachability check must not go through a proxy of the
	// environment.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err // Get "URL": the cause
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("Get %q: status %s: %q", url, resp.Status, body)
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = ctx.Err()
		}
		return fmt.Errorf("Get %q: reading the body: %w", url, err)
	}
	return nil
}

// serveAPI serves, over TLS with a self-signed certificate made now, an
// aggregated API of no resources (see -https).
func serveAPI(addr string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "testapp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: addr, Handler: http.HandlerFunc(apiHandler),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
	return srv.ListenAndServeTLS("", "")
}

// apiHandler answers /apis/GROUP/VERSION with an empty APIResourceList,
// anything else with "ok".
func apiHandler(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 3 || parts[0] != "apis" {
		fmt.Fprintln(w, "ok")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": parts[1] + "/" + parts[2], "resources": []any{}})
}
