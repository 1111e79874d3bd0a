// Command testapp is the payload of the test image used by the CRI tests: a
// static program that prints what it is told, then sleeps until a signal or
// exits with a given code, and can answer HTTP.
//
//	testapp -print "hello" -exit 3 -after 100ms   # prints, then exits 3
//	testapp -http 127.0.0.1:8080                  # serves "ok" on every path
package main

import (
	"flag"
	"fmt"
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
	flag.Parse()

	for _, p := range prints {
		fmt.Println(p)
	}
	for _, p := range eprints {
		fmt.Fprintln(os.Stderr, p)
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
