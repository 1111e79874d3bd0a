package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("ok\n"))
		case "/slow":
			time.Sleep(time.Second)
			w.Write([]byte("late\n"))
		default:
			http.Error(w, "nothing here", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String() + "/"
	closed.Close()

	for _, tc := range []struct {
		name, url string
		timeout   time.Duration
		body      string
		err       string
	}{
		{"2xx", srv.URL + "/ok", time.Second, "ok\n", ""},
		{"404", srv.URL + "/missing", time.Second, "", "status 404 Not Found"},
		{"refused", closedURL, time.Second, "", "connection refused"},
		{"timeout", srv.URL + "/slow", 100 * time.Millisecond, "", "deadline exceeded"},
		{"bad url", "::", time.Second, "", "missing protocol scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := get(tc.url, tc.timeout, &out)
			if tc.err == "" {
				if err != nil || out.String() != tc.body {
					t.Fatalf("get: %q, %v; want %q", out.String(), err, tc.body)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("get: error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

func TestAPIHandler(t *testing.T) {
	for path, want := range map[string]string{
		"/apis/demo.oneinfra.io/v1": `"groupVersion":"demo.oneinfra.io/v1"`,
		"/healthz":                  "ok",
	} {
		rec := httptest.NewRecorder()
		apiHandler(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("%s: %d %q, want %q", path, rec.Code, rec.Body.String(), want)
		}
	}
}
