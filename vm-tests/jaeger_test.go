//go:build linux && jaeger

package vmtests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestJaeger sends a real agent's spans to a real Jaeger (built by `make test-jaeger` from the
// pinned module in vm-tests/jaeger) and finds them through Jaeger's query API by audit seq.
func TestJaeger(t *testing.T) {
	bin := os.Getenv("WIRKEN_JAEGER_BIN")
	if bin == "" {
		t.Fatal("WIRKEN_JAEGER_BIN is not set: run `make test-jaeger`")
	}
	otlpPort, queryPort, healthPort, grpcPort, queryGRPC := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	write(t, cfg, []byte(fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}
  telemetry: {metrics: {level: none}}
extensions:
  jaeger_query: {storage: {traces: mem}, http: {endpoint: 127.0.0.1:%d}, grpc: {endpoint: 127.0.0.1:%d}}
  jaeger_storage: {backends: {mem: {memory: {max_traces: 10000}}}}
  healthcheckv2: {use_v2: true, http: {endpoint: 127.0.0.1:%d}}
receivers:
  otlp: {protocols: {grpc: {endpoint: 127.0.0.1:%d}, http: {endpoint: 127.0.0.1:%d}}}
processors: {batch: {}}
exporters: {jaeger_storage_exporter: {trace_storage: mem}}
`, queryPort, queryGRPC, healthPort, grpcPort, otlpPort)))
	j := exec.Command(bin, "--config", cfg)
	j.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	logs := &lockedBuffer{}
	j.Stdout, j.Stderr = logs, logs
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		j.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { j.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			j.Process.Kill()
		}
	})
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/status", healthPort), logs)

	e := newEnvWith(t, envOptions{otlpEndpoint: fmt.Sprintf("http://127.0.0.1:%d", otlpPort)})
	e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")...).mustSucceed(t)
	use := e.records("credential.use")
	if len(use) != 1 {
		t.Fatalf("credential.use records: %v", use)
	}
	seq := strconv.FormatInt(int64(use[0]["seq"].(float64)), 10)

	tags, _ := json.Marshal(map[string]string{"wirken.audit.seq": seq, "wirken.agent": "demo"})
	q := fmt.Sprintf("http://127.0.0.1:%d/api/traces?service=wirken&limit=5&tags=%s", queryPort, url.QueryEscape(string(tags)))
	deadline := time.Now().Add(30 * time.Second)
	for {
		var body struct {
			Data []struct {
				Spans []struct {
					OperationName string `json:"operationName"`
					Tags          []struct {
						Key   string `json:"key"`
						Value any    `json:"value"`
					} `json:"tags"`
				} `json:"spans"`
			} `json:"data"`
		}
		if resp, err := http.Get(q); err == nil {
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
		}
		if len(body.Data) > 0 && len(body.Data[0].Spans) > 0 {
			tagsSeen := map[string]string{}
			for _, tg := range body.Data[0].Spans[0].Tags {
				tagsSeen[tg.Key] = fmt.Sprint(tg.Value)
			}
			if tagsSeen["wirken.credential"] != "api" || tagsSeen["wirken.audit.leaf_hash"] == "" {
				t.Fatalf("Jaeger has the span but its tags are %v", tagsSeen)
			}
			t.Logf("Jaeger returned the agent's span %q with audit seq %s", body.Data[0].Spans[0].OperationName, seq)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Jaeger has no span with audit seq %s after 30s\n%s", seq, logs)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func waitHTTP(t *testing.T, u string, logs *lockedBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30s\n%s", u, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
