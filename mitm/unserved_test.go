package mitm

import (
	"io"
	"strings"
	"testing"
	"time"
)

// unservedEvents counts the conn.deny records of requests goproxy did not serve.
func (f *fakeRecorder) unservedEvents() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, e := range f.events {
		if e.Kind == "conn.deny" && e.Reason == unservedReason {
			n++
		}
	}
	return n
}

func TestUnservedRequestIsAudited(t *testing.T) {
	hidden := "GET /v1/hidden HTTP/1.1\r\nHost: api.example.test\r\n\r\n"
	for _, tc := range []struct{ name, raw string }{
		{"duplicate Content-Length", "POST /v1/a HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 0\r\nContent-Length: 51\r\n\r\n" + hidden},
		{"two Transfer-Encodings", "POST /v1/a HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + hidden},
		{"PROXY protocol line", "PROXY TCP4 10.0.0.1 10.0.0.2 4000 443\r\n" + hidden},
		{"header cut short", "GET /v1/a HTTP/1.1\r\nHost: api.exa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.dialTLS(t)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.raw)
			if tc.name == "header cut short" {
				c.CloseWrite()
			}
			got, _ := io.ReadAll(c)
			if strings.Contains(string(got), "upstream ") || len(h.auth()) != 0 {
				t.Fatalf("the request reached the upstream: %q", got)
			}
			for i := 0; h.rec.unservedEvents() != 1; i++ {
				if i == 100 {
					t.Fatalf("events %v; want one conn.deny of the unserved request", h.rec.kinds())
				}
				time.Sleep(20 * time.Millisecond)
			}
			h.rec.mu.Lock()
			ev := h.rec.events[len(h.rec.events)-1]
			h.rec.mu.Unlock()
			if ev.Agent != "demo" || ev.Host != "api.example.test" {
				t.Fatalf("record %+v; want agent demo and the TLS name", ev)
			}
		})
	}
	t.Run("served requests then a clean close leave no such record", func(t *testing.T) {
		h := newHarness(t)
		c := h.dialTLS(t)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /v1/a HTTP/1.1\r\nHost: api.example.test\r\n\r\nGET /v1/b HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
		got, _ := io.ReadAll(c)
		if strings.Count(string(got), "HTTP/1.1 200") != 2 {
			t.Fatalf("got %q; want two answers", got)
		}
		time.Sleep(200 * time.Millisecond)
		if n := h.rec.unservedEvents(); n != 0 || len(h.rec.kinds()) != 2 {
			t.Fatalf("events %v; want the two requests' records only", h.rec.kinds())
		}
	})
}
