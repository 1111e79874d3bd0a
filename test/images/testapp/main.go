// Command testapp is the payload of the test image used by the CRI tests: a
// static program that prints what it is told, then sleeps until a signal or
// exits with a given code, and can answer HTTP or fetch a URL once.
//
//	testapp -print "hello" -exit 3 -after 100ms   # prints, then exits 3
//	testapp -http 127.0.0.1:8080                  # serves "ok" on every path
//	testapp -get http://10.244.1.5:8080/          # prints the body; exit 0 on 2xx
//
// -get is for reachability checks (kubectl exec POD -- testapp -get URL): it
// makes one request (no retry, no proxy) within -timeout, prints the body on
// stdout and exits 0 on a 2xx status; otherwise it prints the error on
// stderr and exits 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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
	getURL := flag.String("get", "", "fetch this URL once, print the body and exit: 0 on a 2xx status, 1 otherwise")
	timeout := flag.Duration("timeout", 5*time.Second, "time limit of -get (connection, headers and body)")
	flag.Parse()
	if *getURL != "" && (*httpAddr != "" || *exit >= 0) {
		fmt.Fprintln(os.Stderr, "testapp: -get cannot be combined with -http or -exit")
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
