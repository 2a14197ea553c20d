package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The load generator's sse, down and up modes against the sink's handlers on a loopback TLS
// server: the byte counts must come out exact (no timing is asserted).
func TestLoadgenAgainstSink(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/stream", stream)
	mux.HandleFunc("/v1/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		json.NewEncoder(w).Encode(map[string]int64{"bytes": n})
	})
	mux.HandleFunc("/v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, answer) })
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")

	g := &loadgen{url: "https://api.bench.local/v1/stream?bytes=10000&events=7&seconds=0", connectTo: addr, timeout: 10 * time.Second}
	f, err := g.get()
	if err != nil {
		t.Fatal(err)
	}
	if f["bytes"] != 10000 || f["first_byte_ms"] <= 0 || f["last_byte_ms"] < f["first_byte_ms"] {
		t.Errorf("sse: %v", f)
	}
	g = &loadgen{url: "https://api.bench.local/v1/upload", connectTo: addr, timeout: 10 * time.Second, bytes: 3 << 20}
	if f, err = g.upload(); err != nil || f["bytes"] != 3<<20 {
		t.Errorf("upload: %v, %v", f, err)
	}
	g = &loadgen{url: "https://api.bench.local/v1/chat/completions", connectTo: addr, method: "POST", timeout: 5 * time.Second}
	if f, err = g.probe(); err != nil || f["ok_unix_ns"] == 0 {
		t.Errorf("probe: %v, %v", f, err)
	}
	g = &loadgen{url: "https://api.bench.local/v1/chat/completions", connectTo: addr, method: "POST", timeout: 5 * time.Second, conns: 4, rate: 50, dur: 200 * time.Millisecond}
	if f, err = g.attack(); err != nil || f["requests"] == 0 || f["success"] != 1 {
		t.Errorf("attack: %v, %v", f, err)
	}
	// A stream with bad parameters is refused, not served empty.
	g = &loadgen{url: "https://api.bench.local/v1/stream?bytes=0", connectTo: addr, timeout: 5 * time.Second}
	if _, err := g.get(); err == nil {
		t.Error("a stream of 0 bytes was served")
	}
}
