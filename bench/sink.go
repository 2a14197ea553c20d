package main

// The sink: `wirken-bench sink`, the bench's own plain-HTTP server behind the upstream nginx
// (SSE and upload, which nginx cannot answer by itself) and the OTLP/HTTP receiver wirken's
// spans go to in the OTel configurations. It runs on CPU 0 with the client and the upstream.

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

func sinkMain(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8446", "address of the SSE and upload server")
	otlp := fs.String("otlp", "127.0.0.1:4318", "address of the OTLP/HTTP receiver")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var otlpBytes, otlpPosts atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/stream", stream)
	mux.HandleFunc("/v1/upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]int64{"bytes": n})
	})
	om := http.NewServeMux()
	count := func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		otlpBytes.Add(n)
		otlpPosts.Add(1)
		// An empty Export*ServiceResponse: full success.
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}
	om.HandleFunc("/v1/traces", count)
	om.HandleFunc("/v1/metrics", count)
	om.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]int64{"bytes": otlpBytes.Load(), "posts": otlpPosts.Load()})
	})
	errc := make(chan error, 2)
	go func() { errc <- http.ListenAndServe(*otlp, om) }()
	go func() { errc <- http.ListenAndServe(*listen, mux) }()
	return <-errc
}

// stream answers server-sent events: ?bytes= in ?events= events spread over ?seconds=, the
// first at once.
func stream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	total, _ := strconv.Atoi(q.Get("bytes"))
	events, _ := strconv.Atoi(q.Get("events"))
	secs, _ := strconv.ParseFloat(q.Get("seconds"), 64)
	if total <= 0 || events <= 0 || secs < 0 {
		http.Error(w, "want ?bytes=&events=&seconds=", http.StatusBadRequest)
		return
	}
	f, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "no flushing", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	per := total / events
	gap := time.Duration(secs * float64(time.Second) / float64(max(events-1, 1)))
	t0 := time.Now()
	for i := 0; i < events; i++ {
		time.Sleep(time.Until(t0.Add(time.Duration(i) * gap)))
		n := per
		if i == events-1 {
			n = total - per*(events-1)
		}
		// "data: " + payload + "\n\n" is n bytes in all.
		if _, err := fmt.Fprintf(w, "data: %s\n\n", strings.Repeat("x", max(n-8, 0))); err != nil {
			return
		}
		f.Flush()
	}
}
