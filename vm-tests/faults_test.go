//go:build linux

package vmtests

// Faults (issue 10): the daemon killed under load, the vault file corrupted at runtime, the KMS
// unreachable, a bad policy reloaded under load, upstreams that reset or never answer, and
// slow-loris agents. Each test logs what the agent saw; none lets a request reach an upstream
// unaudited or around the proxy.

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// faultAgentArg, as the first argument, makes the test binary a load or slow-loris agent.
const faultAgentArg = "wirken-fault-agent"

// loadReport is what a load agent prints.
type loadReport struct {
	OK       []loadHit      // /echo requests answered 200 by the upstream (through wirken)
	Outcomes map[string]int // "echo 200", "admin 403", "echo error: connection refused", ...
	Wrong    []string       // answers that break a promise (a denied path answered 200, ...)
}

type loadHit struct {
	ID string
	At int64 // unix nanoseconds of the answer
}

func faultAgent(args []string) int {
	var rep any
	switch args[0] {
	case "load": // load SECONDS WORKERS TAG [STOPFILE]: until SECONDS pass or STOPFILE exists
		secs, _ := strconv.Atoi(args[1])
		workers, _ := strconv.Atoi(args[2])
		stop := ""
		if len(args) > 4 {
			stop = args[4]
		}
		rep = faultLoad(time.Duration(secs)*time.Second, workers, args[3], stop)
	case "loris": // loris CONNS SECONDS
		n, _ := strconv.Atoi(args[1])
		secs, _ := strconv.Atoi(args[2])
		rep = lorisAgent(n, time.Duration(secs)*time.Second)
	default:
		fmt.Fprintln(os.Stderr, "unknown fault agent mode", args[0])
		return 2
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// faultLoad sends requests to api.example.test from workers until d has passed: the even
// workers over kept-alive connections, the odd ones over a new connection each. Every fourth
// request asks for /admin (no rule allows it: it must be 403); the rest ask for /echo/<id>
// with a unique id. Each carries the agent's own dummy Authorization, which must never reach
// the upstream.
func faultLoad(d time.Duration, workers int, tag, stopFile string) loadReport {
	rep := loadReport{Outcomes: map[string]int{}}
	var mu sync.Mutex
	deadline := time.Now().Add(d)
	var stopped atomic.Bool
	if stopFile != "" {
		go func() {
			for !stopped.Load() {
				if _, err := os.Stat(stopFile); err == nil {
					stopped.Store(true)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		defer stopped.Store(true)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{DisableKeepAlives: w%2 == 1, MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: w%4 == 0}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for n := 0; time.Now().Before(deadline) && !stopped.Load(); n++ {
				kind, path := "echo", fmt.Sprintf("/echo/%s-%d-%d", tag, w, n)
				if n%4 == 3 {
					kind, path = "admin", fmt.Sprintf("/admin/%s-%d-%d", tag, w, n)
				}
				req, _ := http.NewRequest(http.MethodGet, "https://api.example.test"+path, nil)
				req.Header.Set("Authorization", "Bearer agent-dummy")
				resp, err := client.Do(req)
				var outcome string
				var body []byte
				if err != nil {
					outcome = kind + " error: " + errKind(err)
				} else {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					outcome = kind + " " + strconv.Itoa(resp.StatusCode)
					if err != nil {
						outcome += " then the body cut off: " + errKind(err)
					}
				}
				mu.Lock()
				rep.Outcomes[outcome]++
				switch {
				case err != nil:
				case kind == "echo" && resp.StatusCode == 200:
					if !strings.Contains(string(body), `"path":"`+path+`"`) {
						rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s answered %q", path, body))
					}
					rep.OK = append(rep.OK, loadHit{ID: path, At: time.Now().UnixNano()})
				case kind == "admin" && resp.StatusCode != 403:
					rep.Wrong = append(rep.Wrong, fmt.Sprintf("%s (no rule) answered %d %q", path, resp.StatusCode, body))
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond) // the daemon is down: do not spin
				}
			}
		}()
	}
	wg.Wait()
	return rep
}

// errKind names a client error without its changing details (ports, addresses).
func errKind(err error) string {
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.As(err, &dnsErr):
		msg := dnsErr.Err
		switch {
		case dnsErr.IsTimeout:
			msg = "timeout"
		case dnsErr.IsNotFound:
			msg = "no such host"
		case strings.Contains(msg, ": "):
			msg = msg[strings.LastIndex(msg, ": ")+2:]
		}
		return "name lookup failed: " + msg
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// lorisReport is what a slow-loris agent prints, per kind of connection.
type lorisReport struct {
	Kinds map[string]*lorisKind
}

type lorisKind struct {
	Opened  int
	Closed  int     // closed by wirken before the agent gave up
	MaxSecs float64 // the longest any was held open
	Answers map[string]int
}

// lorisAgent opens n connections to api.example.test:443 (steered to wirken) and holds each
// as long as wirken lets it, up to d: a third never send a byte; a third send the first bytes
// of a TLS record and stall; a third finish the TLS handshake and then send a request header
// one byte every 100 ms, forever.
func lorisAgent(n int, d time.Duration) lorisReport {
	rep := lorisReport{Kinds: map[string]*lorisKind{}}
	ips, err := net.DefaultResolver.LookupHost(context.Background(), "api.example.test")
	if err != nil || len(ips) == 0 {
		fmt.Fprintln(os.Stderr, "loris: resolving api.example.test:", err)
		os.Exit(1)
	}
	addr := net.JoinHostPort(ips[0], "443")
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		kind := []string{"silent", "stalled TLS hello", "header byte by byte"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return
			}
			defer conn.Close()
			mu.Lock()
			k := rep.Kinds[kind]
			if k == nil {
				k = &lorisKind{Answers: map[string]int{}}
				rep.Kinds[kind] = k
			}
			k.Opened++
			mu.Unlock()
			conn.SetDeadline(start.Add(d))
			var c net.Conn = conn
			switch kind {
			case "stalled TLS hello":
				conn.Write([]byte{0x16, 0x03, 0x01})
			case "header byte by byte":
				tc := tls.Client(conn, &tls.Config{ServerName: "api.example.test", InsecureSkipVerify: true})
				if err := tc.Handshake(); err != nil {
					break
				}
				c = tc
				go func() {
					hdr := "GET /echo/loris HTTP/1.1\r\nHost: api.example.test\r\nX-Pad: " + strings.Repeat("a", 1<<20)
					for i := range len(hdr) {
						if _, err := c.Write([]byte{hdr[i]}); err != nil {
							return
						}
						time.Sleep(100 * time.Millisecond)
					}
				}()
			}
			buf := make([]byte, 64)
			m, err := io.ReadAtLeast(c, buf, 1)
			var ne net.Error
			closed := !(errors.As(err, &ne) && ne.Timeout())
			answer := "nothing"
			if m > 0 {
				answer = strings.SplitN(string(buf[:m]), "\r\n", 2)[0]
				if !strings.HasPrefix(answer, "HTTP/") {
					answer = fmt.Sprintf("%d bytes", m)
				}
				// Read on to the close.
				_, err = io.Copy(io.Discard, c)
				closed = !(errors.As(err, &ne) && ne.Timeout())
			}
			held := time.Since(start).Seconds()
			mu.Lock()
			k.Answers[answer]++
			if closed {
				k.Closed++
			}
			k.MaxSecs = max(k.MaxSecs, held)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return rep
}

// faultAgentCmd starts the fault agent as agent demo in the background.
func (e *env) faultAgentCmd(t *testing.T, ctx context.Context, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.CommandContext(ctx, wirkenBin, append([]string{"exec", "--agent", "demo", "--", escapeBinary(t), faultAgentArg}, args...)...)
	cmd.Env = append(os.Environ(), "WIRKEN_CONFIG="+e.config)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out
}

func waitReport(t *testing.T, cmd *exec.Cmd, out *lockedBuffer, rep any) {
	t.Helper()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fault agent: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out.String()), rep); err != nil {
		t.Fatalf("fault agent report %q: %v", out, err)
	}
}

func outcomesText(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s x%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// checkAllAudited fails unless every request the api upstream received carried the injected
// credential (none came around the proxy, none with the agent's own header) and has its
// credential.use record, by path. It returns how many had no credential.result (in flight
// when the daemon died).
func checkAllAudited(t *testing.T, e *env) (received, unfinished int) {
	t.Helper()
	e.api.mu.Lock()
	auth, paths := append([]string(nil), e.api.auth...), append([]string(nil), e.api.path...)
	e.api.mu.Unlock()
	for i, a := range auth {
		if a != "Bearer "+e.canary {
			t.Errorf("the upstream received %s with Authorization %q: not through the proxy's injection", paths[i], a)
		}
	}
	uses, results := map[string]int{}, map[string]bool{}
	for _, r := range e.records("credential.use") {
		uses[fmt.Sprint(r["path"])]++
	}
	for _, r := range e.records("credential.result") {
		results[fmt.Sprint(r["path"])] = true
	}
	got := map[string]int{}
	for _, p := range paths {
		got[p]++
	}
	for p, n := range got {
		if uses[p] < n {
			t.Errorf("the upstream received %s %d times; the audit log has %d credential.use records for it", p, n, uses[p])
		}
		if !results[p] {
			unfinished++
		}
	}
	if n := e.other.ln.accepted.Load(); n != 0 {
		t.Errorf("the upstream with no rule accepted %d connections", n)
	}
	return len(paths), unfinished
}

// TestFaultKillUnderLoad kills the daemon with SIGKILL while an agent keeps 16 workers busy
// (kept-alive and new connections, allowed and denied paths), restarts it, and proves that no
// request went around the proxy and every request the upstream received was audited.
func TestFaultKillUnderLoad(t *testing.T) {
	e := newEnvWith(t, envOptions{restartable: true})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stop := filepath.Join(e.dir, "stop-load")
	cmd, out := e.faultAgentCmd(t, ctx, "load", "80", "16", "kill", stop)
	// Load until the upstream has served some (slow under emulation), then kill.
	waitReceived := func(n int) {
		deadline := time.Now().Add(30 * time.Second)
		for len(e.api.seen()) < n && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitReceived(50)
	e.killDaemon()
	killedAt := time.Now()
	// What the dead daemon had already written may still arrive; after that, nothing may.
	time.Sleep(300 * time.Millisecond)
	received0 := len(e.api.seen())
	time.Sleep(1700 * time.Millisecond)
	receivedDead := len(e.api.seen())
	e.startDaemon()
	restartedAt := time.Now()
	waitReceived(receivedDead + 50)
	write(t, stop, nil)
	var rep loadReport
	waitReport(t, cmd, out, &rep)
	t.Logf("what the agent saw: %s", outcomesText(rep.Outcomes))
	t.Logf("daemon killed after the upstream had received %d requests, back %v later; the load went on %v after that", received0, restartedAt.Sub(killedAt).Round(time.Millisecond), time.Since(restartedAt).Round(time.Millisecond))
	for _, w := range rep.Wrong {
		t.Errorf("agent: %s", w)
	}
	var before, during, after int
	for _, h := range rep.OK {
		switch at := time.Unix(0, h.At); {
		case at.Before(killedAt):
			before++
		case at.Before(restartedAt):
			during++
		default:
			after++
		}
	}
	t.Logf("answered 200: %d before the kill, %d while it was dead or starting again, %d after it said it was ready", before, during, after)
	if before == 0 || during+after == 0 {
		t.Fatalf("%d requests served before the kill, %d after the restart; want both > 0", before, after)
	}
	// While the daemon was dead nothing reached the upstream (what was in flight at the kill
	// was audited before it left: checked below).
	if n := receivedDead - received0; n != 0 {
		t.Errorf("the upstream received %d requests while the daemon was dead", n)
	}
	var failedWhileDead int
	for k, v := range rep.Outcomes {
		if strings.Contains(k, "error") {
			failedWhileDead += v
		}
	}
	if failedWhileDead == 0 {
		t.Error("no request failed while the daemon was dead: was it really killed?")
	}
	upstream := map[string]bool{}
	e.api.mu.Lock()
	for _, p := range e.api.path {
		upstream[p] = true
	}
	e.api.mu.Unlock()
	for _, h := range rep.OK {
		if !upstream[h.ID] {
			t.Errorf("the agent got 200 for %s, which the upstream never received", h.ID)
		}
	}
	received, unfinished := checkAllAudited(t, e)
	t.Logf("the upstream received %d requests, every one with the injected credential and its credential.use record; %d were in flight at the kill (credential.use, no credential.result)", received, unfinished)
	if unfinished > 16 {
		t.Errorf("%d requests lack a credential.result; only the 16 in flight at the kill may", unfinished)
	}
	denied := 0
	for _, r := range e.records("request.deny") {
		if strings.HasPrefix(fmt.Sprint(r["path"]), "/admin/") {
			denied++
		}
	}
	if denied == 0 || denied < rep.Outcomes["admin 403"] {
		t.Errorf("%d /admin requests answered 403, %d request.deny records", rep.Outcomes["admin 403"], denied)
	}
	v := e.wirken(nil, "audit", "verify").mustSucceed(t)
	t.Logf("audit verify across the crash: %s", strings.TrimSpace(v.stdout))
	if len(e.records("startup")) != 2 {
		t.Errorf("startup records: %d; want 2 (start and restart)", len(e.records("startup")))
	}
}

// replaceFile puts data at path atomically, as an editor or a restore would.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".fault-tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestFaultVaultCorrupt corrupts the vault file under the running daemon in four ways: each is
// refused by the file watch and by `wirken reload` with an error naming the file and what
// failed, audited, and the last good vault keeps serving.
func TestFaultVaultCorrupt(t *testing.T) {
	e := newEnv(t)
	vaultFile := filepath.Join(e.dir, "state", "vault.wkv")
	good, err := os.ReadFile(vaultFile)
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte(randHex(t, len(good)/2))
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated", good[:len(good)/2]},
		{"bit-flipped", func() []byte { b := append([]byte(nil), good...); b[len(b)*2/3] ^= 0x04; return b }()},
		{"replaced by garbage", garbage},
		{"emptied", []byte{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rejects := func() []map[string]any {
				var out []map[string]any
				for _, r := range e.records("vault.reload") {
					if r["decision"] == "reject" {
						out = append(out, r)
					}
				}
				return out
			}
			before := len(rejects())
			replaceFile(t, vaultFile, tc.data)
			defer replaceFile(t, vaultFile, good)
			deadline := time.Now().Add(10 * time.Second)
			for len(rejects()) == before {
				if time.Now().After(deadline) {
					t.Fatal("the corrupted vault file was not refused by the file watch (no vault.reload reject record)")
				}
				time.Sleep(50 * time.Millisecond)
			}
			rec := rejects()[len(rejects())-1]
			reason := fmt.Sprint(rec["reason"])
			if !strings.Contains(reason, vaultFile) {
				t.Errorf("the audited refusal %q does not name the file", reason)
			}
			r := e.wirken(nil, "reload")
			if r.code == 0 || !strings.Contains(r.stderr, vaultFile) {
				t.Errorf("wirken reload with a corrupted vault: exit %d, stderr %q; want a refusal naming the file", r.code, r.stderr)
			}
			before = len(e.api.seen())
			c := e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "-w", "\n%{http_code}")...)
			if seen := e.api.seen(); !strings.HasSuffix(c.stdout, "\n200") || len(seen) != before+1 || seen[before] != "Bearer "+e.canary {
				t.Fatalf("with the vault file %s the agent got %q and the upstream saw %q; want 200 with the last good secret", tc.name, c.stdout, seen[before:])
			}
			t.Logf("vault file %s: refused with %q; wirken reload: exit %d %q; the agent got 200 with the last good secret", tc.name, reason, r.code, strings.TrimSpace(r.stderr))
		})
	}
	if strings.Contains(e.auditLog()+e.logs.String(), e.canary) {
		t.Fatal("the secret appears in the audit or daemon log")
	}
}

// TestFaultPolicyReloadUnderLoad reloads a policy with a syntax error, and one with a bad
// field, while an agent keeps 8 workers busy: each reload is refused with file, line and field,
// audited, and not one request fails or gets through unchecked (every /admin request is 403).
func TestFaultPolicyReloadUnderLoad(t *testing.T) {
	e := newEnv(t)
	polFile := filepath.Join(e.dir, "policy.toml")
	good, err := os.ReadFile(polFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, out := e.faultAgentCmd(t, ctx, "load", "8", "8", "reload")
	time.Sleep(1500 * time.Millisecond)
	for _, tc := range []struct {
		name, text, want string
	}{
		{"syntax error", strings.Replace(string(good), `paths = ["/echo"]`, `paths = ["/echo"`, 1), "policy.toml:"},
		{"bad field value", strings.Replace(string(good), `paths = ["/echo"]`, `paths = ["echo/../admin"]`, 1), "paths"},
		{"unknown field", strings.Replace(string(good), `paths = ["/echo"]`, "paths = [\"/echo\"]\npath_prefixes = [\"/\"]", 1), "path_prefixes"},
	} {
		if tc.text == string(good) {
			t.Fatalf("%s: the policy was not changed", tc.name)
		}
		replaceFile(t, polFile, []byte(tc.text))
		r := e.wirken(nil, "reload")
		if r.code == 0 || !strings.Contains(r.stderr, "policy.toml:") || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("reload of a policy with a %s: exit %d, stderr %q; want a refusal naming file, line and %q", tc.name, r.code, r.stderr, tc.want)
		}
		t.Logf("%s: wirken reload exit %d: %s", tc.name, r.code, strings.TrimSpace(r.stderr))
		time.Sleep(500 * time.Millisecond)
	}
	replaceFile(t, polFile, good)
	e.wirken(nil, "reload").mustSucceed(t)
	var rep loadReport
	waitReport(t, cmd, out, &rep)
	t.Logf("what the agent saw during the reloads: %s", outcomesText(rep.Outcomes))
	for _, w := range rep.Wrong {
		t.Errorf("agent: %s", w)
	}
	for k, v := range rep.Outcomes {
		if k != "echo 200" && k != "admin 403" {
			t.Errorf("%d requests had outcome %q during the reloads; want none", v, k)
		}
	}
	if rep.Outcomes["echo 200"] == 0 || rep.Outcomes["admin 403"] == 0 {
		t.Fatalf("outcomes %v: the load did not run", rep.Outcomes)
	}
	rejected := 0
	for _, rec := range e.records("policy.load") {
		if rec["decision"] == "reject" {
			rejected++
		}
	}
	if rejected != 3 {
		t.Errorf("%d policy.load reject records; want 3", rejected)
	}
	received, _ := checkAllAudited(t, e)
	t.Logf("the upstream received %d requests, each with the injected credential and its credential.use record", received)
}

// fakeKMS is a HashiCorp Vault transit engine as the transit seal uses it (encrypt and
// decrypt of one key under a token), on a loopback port it can leave and come back to, or
// keep but never answer on.
type fakeKMS struct {
	t     *testing.T
	addr  string
	token string
	aead  cipher.AEAD
	mu    sync.Mutex
	srv   *http.Server
	calls int
	hang  chan struct{} // closed to release hung requests
}

func startFakeKMS(t *testing.T) *fakeKMS {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKMS{t: t, addr: "127.0.0.1:0", token: randHex(t, 12), aead: aead}
	k.start(false)
	t.Cleanup(k.stop)
	return k
}

// start serves on k.addr (the same port again after stop); hung: accept and never answer.
func (k *fakeKMS) start(hung bool) {
	ln, err := net.Listen("tcp", k.addr)
	if err != nil {
		k.t.Fatalf("fake KMS on %s: %v", k.addr, err)
	}
	k.addr = ln.Addr().String()
	k.hang = make(chan struct{})
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		k.calls++
		k.mu.Unlock()
		if hung {
			<-k.hang
			return
		}
		var in map[string]string
		if r.Header.Get("X-Vault-Token") != k.token || json.NewDecoder(r.Body).Decode(&in) != nil {
			http.Error(w, `{"errors":["permission denied"]}`, http.StatusForbidden)
			return
		}
		var out string
		switch r.URL.Path {
		case "/v1/transit/encrypt/wirken":
			pt, _ := base64.StdEncoding.DecodeString(in["plaintext"])
			nonce := make([]byte, k.aead.NonceSize())
			rand.Read(nonce)
			out = `{"data":{"ciphertext":"vault:v1:` + base64.StdEncoding.EncodeToString(k.aead.Seal(nonce, nonce, pt, nil)) + `"}}`
		case "/v1/transit/decrypt/wirken":
			ct, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(in["ciphertext"], "vault:v1:"))
			if len(ct) < k.aead.NonceSize() {
				http.Error(w, `{"errors":["invalid ciphertext"]}`, http.StatusBadRequest)
				return
			}
			pt, err := k.aead.Open(nil, ct[:k.aead.NonceSize()], ct[k.aead.NonceSize():], nil)
			if err != nil {
				http.Error(w, `{"errors":["cipher: message authentication failed"]}`, http.StatusBadRequest)
				return
			}
			out = `{"data":{"plaintext":"` + base64.StdEncoding.EncodeToString(pt) + `"}}`
		default:
			http.Error(w, `{"errors":["no handler for route"]}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, out)
	})}
	k.mu.Lock()
	k.srv = srv
	k.mu.Unlock()
	go srv.Serve(ln)
}

func (k *fakeKMS) stop() {
	k.mu.Lock()
	srv := k.srv
	k.srv = nil
	k.mu.Unlock()
	if srv != nil {
		close(k.hang)
		srv.Close()
	}
}

func (k *fakeKMS) callCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.calls
}

// TestFaultKMSUnreachable runs a daemon whose vault is sealed by a transit KMS, then takes the
// KMS away: unsealed keys keep serving, rotations are refused, and a daemon (re)started without
// its KMS does not start, names the seal, and leaves agents refused rather than let out.
func TestFaultKMSUnreachable(t *testing.T) {
	kms := startFakeKMS(t)
	tokenFile := filepath.Join(t.TempDir(), "transit.token")
	if err := os.WriteFile(tokenFile, []byte(kms.token), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, envOptions{config: fmt.Sprintf("[vault]\nunseal_timeout = 3\n[[vault.seals]]\ntype = \"transit\"\naddress = %q\ntoken_file = %q\nmount_path = \"transit/\"\nkey_name = \"wirken\"\n",
		"http://"+kms.addr, tokenFile)})
	if kms.callCount() == 0 {
		t.Fatal("the fake KMS was never called: the vault is not sealed by it")
	}
	injected := func(t *testing.T, want string) {
		t.Helper()
		before := len(e.api.seen())
		r := e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "-w", "\n%{http_code}")...)
		if seen := e.api.seen(); !strings.HasSuffix(r.stdout, "\n200") || len(seen) != before+1 || seen[before] != "Bearer "+want {
			t.Fatalf("the agent got %q, the upstream saw %q; want 200 with the secret injected", r.stdout, seen[before:])
		}
	}
	injected(t, e.canary)

	t.Run("during the run: unsealed keys keep serving, rotation is refused", func(t *testing.T) {
		kms.stop()
		for range 3 {
			injected(t, e.canary)
		}
		e.wirken(nil, "reload").mustSucceed(t)
		put := e.wirken(strings.NewReader("WKCANARY3-"+randHex(t, 8)+"\n"), "vault", "put", "--host", "api.example.test", "api-key")
		if put.code == 0 || !strings.Contains(put.stderr, "transit") {
			t.Errorf("vault put with the KMS down: exit %d, stderr %q; want a refusal naming the transit seal", put.code, put.stderr)
		}
		rot := e.wirken(nil, "vault", "rotate", "root")
		if rot.code == 0 || !strings.Contains(rot.stderr, "transit") {
			t.Errorf("vault rotate root with the KMS down: exit %d, stderr %q; want a refusal naming the transit seal", rot.code, rot.stderr)
		}
		injected(t, e.canary)
		t.Logf("KMS down: requests 200 with the unsealed secret; vault put: exit %d %q; rotate root: exit %d %q",
			put.code, strings.TrimSpace(put.stderr), rot.code, strings.TrimSpace(rot.stderr))
	})

	t.Run("at start: no start, the seal named, agents refused", func(t *testing.T) {
		e.killDaemon()
		for _, hung := range []bool{false, true} {
			what := "refusing connections"
			if hung {
				what = "accepting but never answering"
				kms.start(true)
			}
			start := time.Now()
			r := runWirken(t, wirkenBin, e.config, nil, "run", "--config", e.config)
			took := time.Since(start)
			if hung {
				kms.stop()
			}
			if r.code == 0 || !strings.Contains(r.stderr, "transit") || !strings.Contains(r.stderr, "wirken: error:") {
				t.Errorf("daemon start with the KMS %s: exit %d, stderr %q; want a non-zero exit naming the transit seal", what, r.code, r.stderr)
			}
			if took > 20*time.Second {
				t.Errorf("daemon start with the KMS %s took %v; vault.unseal_timeout is 3 s", what, took)
			}
			t.Logf("daemon start with the KMS %s: exit %d after %v: %s", what, r.code, took.Round(time.Millisecond), lastLine(r.stderr))
		}
		// The pinned programs still steer the agent's cgroup to a proxy that is not there.
		fd, err := syscall.Open(filepath.Join(e.cgroup, "agents", "demo"), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fd)
		before := len(e.api.seen())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := curlResolveArgs("api.example.test", "127.0.0.2", "/echo", "-k")
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		r := run(t, nil, cmd)
		if r.code == 0 || len(e.api.seen()) != before {
			t.Fatalf("an agent reached the upstream with no daemon: exit %d %q", r.code, r.stdout)
		}
		t.Logf("an agent with no daemon: curl exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	})

	t.Run("the KMS back: the daemon starts and serves", func(t *testing.T) {
		kms.start(false)
		e.startDaemon()
		injected(t, e.canary)
		e.wirken(nil, "audit", "verify").mustSucceed(t)
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// faultyUpstream is api.example.test on 127.0.0.6:443 misbehaving by path: /echo/ok answers,
// /echo/rst-before resets the connection once the request is read, /echo/close-before closes
// it, /echo/rst-mid sends a 200 header and part of the body and resets, /echo/hang never
// answers. It counts what it received by path.
type faultyUpstream struct {
	mu   sync.Mutex
	got  map[string]int
	auth []string
}

const faultyAddr = "127.0.0.6:443"

func startFaultyUpstream(t *testing.T, cert tls.Certificate) *faultyUpstream {
	t.Helper()
	u := &faultyUpstream{got: map[string]int{}}
	release := make(chan struct{})
	ln, err := net.Listen("tcp", faultyAddr)
	if err != nil {
		t.Fatalf("faulty upstream on %s: %v", faultyAddr, err)
	}
	reset := func(w http.ResponseWriter, prefix string) {
		c, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		if prefix != "" {
			buf.WriteString(prefix)
			buf.Flush()
			time.Sleep(100 * time.Millisecond)
		}
		if tc, ok := c.(*tls.Conn); ok {
			tc.NetConn().(*net.TCPConn).SetLinger(0) // close sends RST
		}
		c.Close()
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.mu.Lock()
			u.got[r.URL.Path]++
			u.auth = append(u.auth, r.Header.Get("Authorization"))
			u.mu.Unlock()
			switch r.URL.Path {
			case "/echo/rst-before":
				reset(w, "")
			case "/echo/close-before":
				c, _, _ := w.(http.Hijacker).Hijack()
				c.Close()
			case "/echo/rst-mid":
				reset(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 1000))
			case "/echo/hang":
				select {
				case <-release:
				case <-r.Context().Done():
				}
			default:
				io.WriteString(w, `{"path":"`+r.URL.Path+`"}`)
			}
		}),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { close(release); srv.Close() })
	return u
}

func (u *faultyUpstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[path]
}

// TestFaultUpstream: upstreams that reset before or during the response, close without one,
// or accept a request and never answer. The agent gets a 502 with a wirken: reason (within
// proxy.upstream_response_header_timeout for the silent one) or a cut-off body; every request
// the upstream received has its credential.use record, and its outcome is in credential.result.
func TestFaultUpstream(t *testing.T) {
	e := newEnvWith(t, envOptions{proxy: "upstream_response_header_timeout = 2"})
	up := startFaultyUpstream(t, e.upCA.leaf(t, "api.example.test"))
	e.dnsUp.set("api.example.test", "127.0.0.6")
	result := func(path string) map[string]any {
		var last map[string]any
		for _, r := range e.records("credential.result") {
			if r["path"] == path {
				last = r
			}
		}
		return last
	}
	uses := func(path string) int {
		n := 0
		for _, r := range e.records("credential.use") {
			if r["path"] == path {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		path       string
		wantStatus string // what curl reports as the response status
		wantBody   string // in the agent's output
		maxSecs    float64
		resultCode float64 // the audited status
		reason     string  // in the audited reason
	}{
		{"/echo/ok", "200", `"path":"/echo/ok"`, 10, 200, ""},
		{"/echo/rst-before", "502", "wirken: ", 10, 502, "connection"}, // reset, or closed once TLS saw it
		{"/echo/close-before", "502", "wirken: ", 10, 502, "closed"},
		{"/echo/hang", "502", "timeout", 2 + 6, 502, "timeout"},
		{"/echo/rst-mid", "200", "", 10, 200, "cut off after 1000 bytes"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			start := time.Now()
			r := e.asAgent("curl", "-sS", "--max-time", "30", "https://api.example.test"+tc.path, "-w", "\n%{http_code} %{size_download}")
			took := time.Since(start)
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			status := strings.Fields(lines[len(lines)-1] + " ?")[0]
			if status != tc.wantStatus || !strings.Contains(r.stdout, tc.wantBody) {
				t.Errorf("the agent got exit %d %q %q; want status %s with %q", r.code, r.stdout, r.stderr, tc.wantStatus, tc.wantBody)
			}
			if took.Seconds() > tc.maxSecs {
				t.Errorf("the agent waited %v; want at most %gs", took, tc.maxSecs)
			}
			got := up.count(tc.path)
			if got == 0 || uses(tc.path) < got {
				t.Errorf("the upstream received %s %d times; %d credential.use records", tc.path, got, uses(tc.path))
			}
			var res map[string]any
			deadline := time.Now().Add(5 * time.Second)
			for res = result(tc.path); res == nil && time.Now().Before(deadline); res = result(tc.path) {
				time.Sleep(50 * time.Millisecond)
			}
			if res == nil || res["status"] != tc.resultCode || !strings.Contains(fmt.Sprint(res["reason"]), tc.reason) {
				t.Errorf("credential.result for %s = %v; want status %v with a reason containing %q", tc.path, res, tc.resultCode, tc.reason)
			}
			t.Logf("%s: the agent saw curl exit %d, %q %s after %v; the upstream received it %d time(s); audited: credential.use x%d, credential.result status %v bytes %v reason %q",
				tc.path, r.code, lastLine(r.stdout), strings.TrimSpace(r.stderr), took.Round(time.Millisecond), got, uses(tc.path), res["status"], res["bytes"], res["reason"])
		})
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for _, a := range up.auth {
		if a != "Bearer "+e.canary {
			t.Errorf("the faulty upstream saw Authorization %q; want the injected credential", a)
		}
	}
}

// daemonFDs counts the daemon's open file descriptors.
func (e *env) daemonFDs(t *testing.T) int {
	t.Helper()
	e.daemonMu.Lock()
	pid := e.daemon.Process.Pid
	e.daemonMu.Unlock()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestFaultSlowLoris: an agent holds 90 connections open as long as wirken lets it (silent,
// a stalled TLS hello, a header sent a byte every 100 ms). wirken closes each within its
// timeout (proxy.first_byte_timeout and read_header_timeout), another agent request
// is served meanwhile, and the daemon's file descriptors come back to where they were.
// (timeouts of 3 s here)
func TestFaultSlowLoris(t *testing.T) {
	const timeout, conns = 3, 90
	e := newEnvWith(t, envOptions{proxy: fmt.Sprintf("first_byte_timeout = %d\nread_header_timeout = %d", timeout, timeout)})
	e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail", "-o", "/dev/null")...).mustSucceed(t)
	fds0 := e.daemonFDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, out := e.faultAgentCmd(t, ctx, "loris", strconv.Itoa(conns), "30")
	// Wait until most of the connections are open (slow under emulation), then ask as another
	// agent while they are.
	fdsPeak := fds0
	for i := 0; fdsPeak < fds0+conns/2; i++ {
		if i == 200 {
			t.Fatalf("the daemon had %d fds 20 s into the attack, %d before: the connections never opened", fdsPeak, fds0)
		}
		time.Sleep(100 * time.Millisecond)
		fdsPeak = max(fdsPeak, e.daemonFDs(t))
	}
	start := time.Now()
	r := e.asAgent(curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail", "-w", "\n%{http_code}")...)
	served := time.Since(start)
	if r.code != 0 || !strings.HasSuffix(r.stdout, "\n200") {
		t.Errorf("another request during the slow-loris: exit %d %q %q; want 200", r.code, r.stdout, r.stderr)
	}
	var rep lorisReport
	waitReport(t, cmd, out, &rep)
	// The daemon closes its side as the agent's connections end; give it a moment.
	var fds1 int
	for range 50 {
		if fds1 = e.daemonFDs(t); fds1 <= fds0+5 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	opened := 0
	for kind, k := range rep.Kinds {
		opened += k.Opened
		t.Logf("%s: %d opened, %d closed by wirken, held at most %.1fs; the agent read: %v", kind, k.Opened, k.Closed, k.MaxSecs, k.Answers)
		if k.Closed != k.Opened {
			t.Errorf("%s: wirken closed %d of %d connections within 30 s", kind, k.Closed, k.Opened)
		}
		// The handshake and then the header each have read_header_timeout.
		if k.MaxSecs > 2*timeout+3 {
			t.Errorf("%s: a connection was held %.1fs; the timeouts are %ds", kind, k.MaxSecs, timeout)
		}
	}
	if opened != conns {
		t.Errorf("the agent opened %d connections; want %d", opened, conns)
	}
	t.Logf("another agent request during the attack: 200 in %v; daemon fds %d before, %d during, %d after", served.Round(time.Millisecond), fds0, fdsPeak, fds1)
	if fds1 > fds0+5 {
		t.Errorf("the daemon holds %d fds after the attack, %d before", fds1, fds0)
	}
}

// lowFreePort is a free TCP and UDP port on 127.0.0.1 below the kernel's ephemeral range.
func lowFreePort(t *testing.T) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, _ = strconv.Atoi(f[0])
		}
	}
	for range 200 {
		n := make([]byte, 2)
		rand.Read(n)
		port := 10000 + (int(n[0])<<8|int(n[1]))%max(lo-10000, 1)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return port
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}
