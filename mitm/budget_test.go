package mitm

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// An agent that asks for br (which wirken cannot read) still has its tokens counted: the
// upstream is asked for identity.
func TestBudgetAcceptEncodingIsIdentity(t *testing.T) {
	h := newInjectHarness(t)
	// Each call reports 90 tokens; the budget is 100 per day.
	for i, want := range []int{200, 200, 429} {
		code, body := h.do(t, newReq(t, "POST", "https://api.openai.test/v1/enc", "{}", "Accept-Encoding", "br"))
		if code != want {
			t.Fatalf("call %d: %d %q, want %d", i, code, body, want)
		}
		if code == 200 {
			if ae := h.last(t).Headers["Accept-Encoding"]; ae != "identity" {
				t.Fatalf("upstream saw Accept-Encoding %q; want identity", ae)
			}
		}
	}
}

// A budgeted response that reports no usage is recorded as such.
func TestBudgetUsageMissingIsRecorded(t *testing.T) {
	h := newInjectHarness(t)
	if code, body := h.do(t, newReq(t, "POST", "https://api.openai.test/v1/nousage", "{}")); code != 200 {
		t.Fatalf("%d %q", code, body)
	}
	if code, _ := h.do(t, newReq(t, "POST", "https://api.openai.test/v1/chat/completions", "{}")); code != 200 {
		t.Fatal(code)
	}
	h.rec.mu.Lock()
	res := append([]Result(nil), h.rec.results...)
	h.rec.mu.Unlock()
	if len(res) != 2 || !res[0].UsageMissing || res[1].UsageMissing {
		t.Fatalf("results %+v; want the first marked usage missing, the second not", res)
	}
	if !strings.Contains(h.logs.String(), "no token usage") {
		t.Fatal("a budgeted response without usage was not logged")
	}
}

// Only DefaultBudgetInFlight requests per agent and budgeted rule are admitted at once.
func TestBudgetInFlightIsCapped(t *testing.T) {
	h := newInjectHarness(t)
	h.hold, h.arrived = make(chan struct{}), make(chan struct{}, 4*DefaultBudgetInFlight)
	var release sync.Once
	unhold := func() { release.Do(func() { close(h.hold) }) }
	t.Cleanup(unhold) // a failing check must not leave the upstream hanging
	var wg sync.WaitGroup
	codes := make([]int, DefaultBudgetInFlight)
	for i := range DefaultBudgetInFlight {
		wg.Go(func() {
			codes[i], _ = h.do(t, newReq(t, "POST", "https://api.openai.test/v1/slow", "{}"))
		})
	}
	for i := range DefaultBudgetInFlight {
		select {
		case <-h.arrived:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d requests reached the upstream", i)
		}
	}
	code, body := h.do(t, newReq(t, "POST", "https://api.openai.test/v1/chat/completions", "{}"))
	unhold()
	wg.Wait()
	if code != 429 || !strings.Contains(body, "in flight") {
		t.Fatalf("request over the in-flight cap: %d %q; want 429", code, body)
	}
	if got := fmt.Sprint(codes); strings.Count(got, "200") != DefaultBudgetInFlight {
		t.Fatalf("held requests answered %s", got)
	}
	if code, _ := h.do(t, newReq(t, "POST", "https://api.openai.test/v1/chat/completions", "{}")); code != 200 {
		t.Fatalf("after the held requests ended: %d; want 200", code)
	}
}
