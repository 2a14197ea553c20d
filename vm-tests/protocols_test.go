//go:build linux

package vmtests

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// protoIP:443 is where the protocol upstream for api.example.test listens (h2 and http/1.1);
// in protoEnv the test's upstream resolver answers api.example.test with protoIP.
const (
	protoIP   = "127.0.0.4"
	protoAddr = protoIP + ":443"
)

// protoUpstream serves every protocol the agents speak and records the Authorization header
// of each request (or gRPC call, or WebSocket upgrade) by path.
type protoUpstream struct {
	mu     sync.Mutex
	auth   map[string][]string // path -> Authorization values seen
	proto  map[string]string   // path -> protocol the request arrived over
	sseAt  []time.Time         // when each SSE event was sent
	upload int64               // bytes of the last upload
}

func (u *protoUpstream) note(r *http.Request, auth string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.auth[r.URL.Path] = append(u.auth[r.URL.Path], auth)
	u.proto[r.URL.Path] = r.Proto
}

func (u *protoUpstream) seen(path string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auth[path]...)
}

// requests counts the requests the upstream received, on every path.
func (u *protoUpstream) requests() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, a := range u.auth {
		n += len(a)
	}
	return n
}

func (u *protoUpstream) protoOf(path string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.proto[path]
}

// rawCodec carries gRPC messages as plain bytes, so the test needs no generated code.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "raw" }
func grpcAuth(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return strings.Join(md.Get("authorization"), ",")
}

var echoService = grpc.ServiceDesc{
	ServiceName: "wirken.test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			out := []byte("unary " + string(in) + " auth=" + grpcAuth(ctx))
			return &out, nil
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Bidi",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(_ any, s grpc.ServerStream) error {
			for {
				var in []byte
				if err := s.RecvMsg(&in); err != nil {
					if err == io.EOF {
						return nil
					}
					return err
				}
				out := []byte("bidi " + string(in) + " auth=" + grpcAuth(s.Context()))
				if err := s.SendMsg(&out); err != nil {
					return err
				}
			}
		},
	}},
}

func startProtoUpstream(t *testing.T, cert tls.Certificate) *protoUpstream {
	t.Helper()
	u := &protoUpstream{auth: map[string][]string{}, proto: map[string]string{}}
	gs := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	gs.RegisterService(&echoService, struct{}{})
	mux := http.NewServeMux()
	mux.HandleFunc("/echo/ws", func(w http.ResponseWriter, r *http.Request) {
		u.note(r, r.Header.Get("Authorization"))
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			c.Write(r.Context(), typ, append([]byte("echo "), msg...))
		}
	})
	mux.HandleFunc("/echo/sse", func(w http.ResponseWriter, r *http.Request) {
		u.note(r, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 50 {
			u.mu.Lock()
			u.sseAt = append(u.sseAt, time.Now())
			u.mu.Unlock()
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	mux.HandleFunc("/echo/upload", func(w http.ResponseWriter, r *http.Request) {
		u.note(r, r.Header.Get("Authorization"))
		n, _ := io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.upload = n
		u.mu.Unlock()
		fmt.Fprintf(w, "received %d\n", n)
	})
	mux.HandleFunc("/echo/download", func(w http.ResponseWriter, r *http.Request) {
		u.note(r, r.Header.Get("Authorization"))
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		buf := make([]byte, 64<<10)
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		u.note(r, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"path": r.URL.Path, "proto": r.Proto})
	})
	ln, err := net.Listen("tcp", protoAddr)
	if err != nil {
		t.Fatalf("protocol upstream on %s: %v", protoAddr, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				u.note(r, r.Header.Get("Authorization"))
				gs.ServeHTTP(w, r)
				return
			}
			mux.ServeHTTP(w, r)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close(); gs.Stop() })
	return u
}

// agentClientArg, as the test binary's first argument, makes it an agent client (TestMain).
const agentClientArg = "wirken-agent-client"

// agentClient is the test binary re-executed inside the agent cgroup as an unmodified Go
// client: default TLS roots (SSL_CERT_FILE from wirken exec), default resolver and dialer (its
// DNS is steered to wirken's resolver). It prints what it got and returns an exit code.
func agentClient(args []string) int {
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "agent client: no mode")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "agent client:", err); return 1 }
	switch args[0] {
	case "http":
		tr := &http.Transport{ForceAttemptHTTP2: true}
		resp, err := (&http.Client{Transport: tr}).Get("https://api.example.test/echo/go")
		if err != nil {
			return fail(err)
		}
		b, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s %s", resp.StatusCode, resp.Proto, b)
	case "grpc":
		conn, err := grpc.NewClient("dns:///api.example.test:443",
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{})),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			return fail(err)
		}
		defer conn.Close()
		in, out := []byte("hello"), []byte(nil)
		if err := conn.Invoke(ctx, "/wirken.test.Echo/Unary", &in, &out); err != nil {
			return fail(err)
		}
		fmt.Println(string(out))
		s, err := conn.NewStream(ctx, &echoService.Streams[0], "/wirken.test.Echo/Bidi")
		if err != nil {
			return fail(err)
		}
		// Each message is answered before the next is sent: a real bidirectional stream.
		for i := range 3 {
			msg := []byte(fmt.Sprintf("m%d", i))
			if err := s.SendMsg(&msg); err != nil {
				return fail(err)
			}
			var got []byte
			if err := s.RecvMsg(&got); err != nil {
				return fail(err)
			}
			fmt.Println(string(got))
		}
		s.CloseSend()
		var end []byte
		if err := s.RecvMsg(&end); err != io.EOF {
			return fail(fmt.Errorf("stream end: %v", err))
		}
		fmt.Println("stream closed ok")
	case "ws":
		c, _, err := websocket.Dial(ctx, "wss://api.example.test/echo/ws", nil)
		if err != nil {
			return fail(err)
		}
		defer c.CloseNow()
		for i := range 3 {
			if err := c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf("frame %d", i))); err != nil {
				return fail(err)
			}
			_, b, err := c.Read(ctx)
			if err != nil {
				return fail(err)
			}
			fmt.Println(string(b))
		}
		c.Close(websocket.StatusNormalClosure, "")
	default:
		return fail(fmt.Errorf("unknown mode %q", args[0]))
	}
	return 0
}

// protoEnv is a daemon whose policy also lets agent demo reach api.example.test on any path,
// with the credential, and the protocol upstream behind 127.0.0.4, where the test's upstream
// resolver now says api.example.test is.
func protoEnv(t *testing.T, extraRules string) (*env, *protoUpstream, string) {
	e := newEnv(t)
	up := startProtoUpstream(t, e.upCA.leaf(t, "api.example.test"))
	e.dnsUp.set("api.example.test", protoIP)
	pol := filepath.Join(e.dir, "policy.toml")
	b, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	write(t, pol, append(b, agentRule("demo-protocols", "api.example.test", 443, `credential = "api"`)+extraRules...))
	e.wirken(nil, "reload").mustSucceed(t)
	// The test binary, copied where the agent user can run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(e.dir, "agent-client")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return e, up, bin
}

// agentRule is a policy rule for agent demo to host:port, with extra keys.
func agentRule(name, host string, port int, extra string) string {
	return fmt.Sprintf("\n[[rules]]\nname = %q\nagent = \"demo\"\nhosts = [%q]\nports = [%d]\n%s\n", name, host, port, extra)
}

// protoCurl is curl as an agent to the protocol upstream: it resolves api.example.test through
// wirken's resolver (to protoIP).
func protoCurl(path string, extra ...string) []string {
	return append([]string{"curl", "-sS", "--max-time", "60", "https://api.example.test" + path}, extra...)
}

// daemonMem reads the daemon's VmHWM and VmRSS in KiB.
func (e *env) daemonMem(t *testing.T) (hwm, rss int64) {
	t.Helper()
	e.daemonMu.Lock()
	pid := e.daemon.Process.Pid
	e.daemonMu.Unlock()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "VmHWM:" || f[0] == "VmRSS:") {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "VmHWM:" {
				hwm = v
			} else {
				rss = v
			}
		}
	}
	return hwm, rss
}

func TestProtocols(t *testing.T) {
	e, up, bin := protoEnv(t, "")
	want := "Bearer " + e.canary
	injected := func(t *testing.T, path string) {
		t.Helper()
		seen := up.seen(path)
		if len(seen) == 0 {
			t.Fatalf("the upstream saw no request for %s", path)
		}
		for _, a := range seen {
			if a != want {
				t.Fatalf("the upstream saw Authorization %q for %s; want the injected credential", a, path)
			}
		}
	}

	for _, tc := range []struct{ flag, agentProto string }{{"--http1.1", "1.1"}, {"--http2", "2"}} {
		t.Run("curl "+tc.flag, func(t *testing.T) {
			path := "/echo/curl" + tc.agentProto
			r := e.asAgent(protoCurl(path, tc.flag, "--fail", "-H", "Authorization: Bearer agent-dummy", "-w", "\n%{http_version}")...).mustSucceed(t)
			i := strings.LastIndexByte(r.stdout, '\n')
			body, ver := r.stdout[:max(i, 0)], r.stdout[i+1:]
			if ver != tc.agentProto || !strings.Contains(body, `"proto":"HTTP/2.0"`) {
				t.Fatalf("curl said %q; want HTTP/%s to wirken and HTTP/2 upstream", r.stdout, tc.agentProto)
			}
			injected(t, path)
		})
	}

	t.Run("python3 urllib and http.client", func(t *testing.T) {
		script := `
import ssl, urllib.request, http.client
print(urllib.request.urlopen("https://api.example.test/echo/urllib", timeout=30).read().decode())
c = http.client.HTTPSConnection("api.example.test", context=ssl.create_default_context(), timeout=30)
c.request("GET", "/echo/httpclient", headers={"Authorization": "Bearer agent-dummy"})
r = c.getresponse()
print(r.status, r.read().decode())
`
		r := e.asAgent("/usr/bin/python3", "-c", script).mustSucceed(t)
		if !strings.Contains(r.stdout, `{"path":"/echo/urllib"`) || !strings.Contains(r.stdout, `200 {"path":"/echo/httpclient"`) {
			t.Fatalf("python got %q", r.stdout)
		}
		injected(t, "/echo/urllib")
		injected(t, "/echo/httpclient")
	})

	t.Run("Go net/http", func(t *testing.T) {
		r := e.asAgent(bin, agentClientArg, "http").mustSucceed(t)
		if !strings.HasPrefix(r.stdout, "200 HTTP/2.0 ") || !strings.Contains(r.stdout, `"path":"/echo/go"`) {
			t.Fatalf("Go client got %q", r.stdout)
		}
		injected(t, "/echo/go")
	})

	t.Run("gRPC unary and bidirectional stream", func(t *testing.T) {
		r := e.asAgent(bin, agentClientArg, "grpc").mustSucceed(t)
		// The upstream echoes the Authorization it got; the agent sees the secret masked
		// (README, Protocols: reflected credentials), in messages whose framing still holds.
		masked := "Bearer " + strings.Repeat("*", len(e.canary))
		for _, line := range []string{"unary hello auth=" + masked, "bidi m0 auth=" + masked, "bidi m2 auth=" + masked, "stream closed ok"} {
			if !strings.Contains(r.stdout, line+"\n") {
				t.Fatalf("gRPC client output lacks %q", line)
			}
		}
		injected(t, "/wirken.test.Echo/Unary")
		injected(t, "/wirken.test.Echo/Bidi")
		if p := up.protoOf("/wirken.test.Echo/Bidi"); p != "HTTP/2.0" {
			t.Fatalf("the stream reached the upstream over %s", p)
		}
	})

	t.Run("WebSocket", func(t *testing.T) {
		r := e.asAgent(bin, agentClientArg, "ws").mustSucceed(t)
		if r.stdout != "echo frame 0\necho frame 1\necho frame 2\n" {
			t.Fatalf("WebSocket client got %q", r.stdout)
		}
		injected(t, "/echo/ws")
		if p := up.protoOf("/echo/ws"); p != "HTTP/1.1" {
			t.Fatalf("the upgrade reached the upstream over %s; WebSocket needs HTTP/1.1", p)
		}
	})

	t.Run("node fetch", func(t *testing.T) {
		node, err := exec.LookPath("node")
		if err != nil {
			t.Skip("node is not installed (the issue asks for it only if present)")
		}
		script := `
fetch("https://api.example.test/echo/node").then(r => r.text().then(t => console.log(r.status, t))).catch(e => { console.error(e); process.exit(1); });
`
		r := e.asAgent(node, "-e", script).mustSucceed(t)
		if !strings.Contains(r.stdout, `200 {"path":"/echo/node"`) {
			t.Fatalf("node got %q", r.stdout)
		}
		injected(t, "/echo/node")
	})

	t.Run("SSE arrives event by event", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		args := append([]string{"exec", "--agent", "demo", "--"}, protoCurl("/echo/sse", "-N", "--http1.1")...)
		cmd := exec.CommandContext(ctx, wirkenBin, args...)
		cmd.Env = append(os.Environ(), "WIRKEN_CONFIG="+e.config)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var got []time.Time
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: event ") {
				got = append(got, time.Now())
			}
		}
		cmd.Wait()
		up.mu.Lock()
		sent := append([]time.Time(nil), up.sseAt...)
		up.mu.Unlock()
		if len(got) != 50 || len(sent) != 50 {
			t.Fatalf("received %d events, upstream sent %d; want 50", len(got), len(sent))
		}
		if early := sent[49].Sub(got[0]); early < 4*time.Second {
			t.Fatalf("the first event arrived only %v before the last was sent: buffered", early)
		}
		var worst time.Duration
		for i := range got {
			worst = max(worst, got[i].Sub(sent[i]))
		}
		if worst > 500*time.Millisecond {
			t.Fatalf("an event arrived %v after it was sent: buffered", worst)
		}
		t.Logf("first event %v before the last was sent; worst event lag %v", sent[49].Sub(got[0]), worst)
		injected(t, "/echo/sse")
	})

	t.Run("100 MB upload and download with flat proxy memory", func(t *testing.T) {
		const n = 100 << 20
		e.asAgent(protoCurl("/echo/warm", "--fail", "-o", "/dev/null")...).mustSucceed(t)
		hwm0, rss0 := e.daemonMem(t)
		for _, proto := range []string{"--http1.1", "--http2"} {
			r := e.asAgent("sh", "-c", fmt.Sprintf("head -c %d /dev/zero | %s -T - --fail %s", n, strings.Join(protoCurl("/echo/upload"), " "), proto)).mustSucceed(t)
			if strings.TrimSpace(r.stdout) != fmt.Sprintf("received %d", n) {
				t.Fatalf("upload %s: %q", proto, r.stdout)
			}
			r = e.asAgent(protoCurl(fmt.Sprintf("/echo/download?n=%d", n), proto, "--fail", "-o", "/dev/null", "-w", "%{size_download}")...).mustSucceed(t)
			if r.stdout != strconv.Itoa(n) {
				t.Fatalf("download %s: %q bytes", proto, r.stdout)
			}
		}
		hwm1, rss1 := e.daemonMem(t)
		t.Logf("daemon VmHWM %d -> %d KiB, VmRSS %d -> %d KiB", hwm0, hwm1, rss0, rss1)
		if grow := hwm1 - hwm0; grow > 20<<10 {
			t.Fatalf("the daemon's peak RSS grew by %d KiB moving 4 x 100 MB; want < 20 MiB", grow)
		}
		injected(t, "/echo/upload")
		injected(t, "/echo/download")
	})

	t.Run("refused and audited, credential never sent", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
			want string
			at   string // where the upstream resolver says api.example.test is during the case
		}{
			{"Host differs from SNI", curlArgs("api.example.test", protoIP, "/echo", "-i", "-H", "Host: evil.example.test"), "403", protoIP},
			{"absolute-form to another host", curlArgs("api.example.test", protoIP, "/echo", "-i", "--http1.1", "--request-target", "https://evil.example.test/echo"), "403", protoIP},
			{"CONNECT to another host", curlArgs("api.example.test", protoIP, "/echo", "-i", "--http1.1", "-X", "CONNECT", "--request-target", "evil.example.test:443"), "403", protoIP},
			// DNS now points the credentialed name at a server that cannot prove it is that
			// name (its certificate is for evil.example.test): the agent resolved it through
			// wirken, so the connection is served, and the upstream's certificate is refused.
			{"SNI of the credentialed host sent to another address", curlArgs("api.example.test", "127.0.0.3", "/echo", "-i"), "502", "127.0.0.3"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e.dnsUp.set("api.example.test", tc.at)
				defer e.dnsUp.set("api.example.test", protoIP)
				apiBefore, otherBefore, protoBefore := len(e.api.seen()), len(e.other.seen()), up.requests()
				deniesBefore := len(e.records("request.deny")) + len(e.records("credential.result"))
				r := e.asAgent(tc.args...)
				if !strings.Contains(r.stdout, " "+tc.want+" ") || !strings.Contains(r.stdout, "wirken: ") {
					t.Fatalf("want %s with a wirken: reason; got exit %d\n%s%s", tc.want, r.code, r.stdout, r.stderr)
				}
				if len(e.api.seen()) != apiBefore || len(e.other.seen()) != otherBefore || up.requests() != protoBefore {
					t.Fatal("the request reached an upstream")
				}
				// A credential.result is queued after the answer, not waited for.
				waitFor(t, "the refusal's audit record", func() bool {
					return len(e.records("request.deny"))+len(e.records("credential.result")) > deniesBefore
				})
			})
		}
	})

	t.Run("the canary secret never leaks", func(t *testing.T) {
		for name, text := range map[string]string{"daemon log": e.logs.String(), "audit log": e.auditLog()} {
			if len(text) == 0 || strings.Contains(text, e.canary) {
				t.Errorf("the %s is empty or holds the secret", name)
			}
		}
	})
}

// tcpEcho listens on addr, greets each connection first (as SMTP does), then echoes.
func tcpEcho(t *testing.T, addr string) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	return tcpEchoOn(t, ln)
}

// tcpEchoOn serves ln as tcpEcho does.
func tcpEchoOn(t *testing.T, ln net.Listener) *countingListener {
	cl := &countingListener{Listener: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := cl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprint(c, "220 ready\n")
				io.Copy(c, c)
			}()
		}
	}()
	return cl
}

func TestPlainHTTPAndOtherTCP(t *testing.T) {
	peer := startPeerNetns(t)
	e, _, _ := protoEnv(t, agentRule("demo-plain", "plain.example.test", 80, "")+
		agentRule("demo-raw", peer.peerIP, 7000, `mode = "passthrough"`)+
		agentRule("demo-raw-lo", "127.0.0.5", 7000, `mode = "passthrough"`)+
		agentRule("demo-raw-lo1", "127.0.0.1", 7002, `mode = "passthrough"`))
	e.dnsUp.set("plain.example.test", "127.0.0.1")
	var mu sync.Mutex
	var plainAuth []string
	ln, err := net.Listen("tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatalf("plain upstream on 127.0.0.1:80: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		plainAuth = append(plainAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprintf(w, "plain %s %s", r.Host, r.URL.Path)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	raw := tcpEchoOn(t, peer.listen(t, 7000))
	unruled := tcpEchoOn(t, peer.listen(t, 7001))
	rawLo := tcpEcho(t, "127.0.0.5:7000")
	unruledLo := tcpEcho(t, "127.0.0.5:7001")
	rawLo1 := tcpEcho(t, "127.0.0.1:7002")

	t.Run("plain HTTP on port 80 through the policy", func(t *testing.T) {
		r := e.asAgent("curl", "-sS", "--max-time", "20", "--fail", "http://plain.example.test/plain").mustSucceed(t)
		if r.stdout != "plain plain.example.test /plain" {
			t.Fatalf("curl got %q", r.stdout)
		}
		// A name the destination is not an address of (the agent bypassed DNS), and the
		// credentialed host in clear (resolved through wirken, but no rule allows port 80).
		for _, args := range [][]string{
			{"--resolve", "plain.example.test:80:127.0.0.5", "http://plain.example.test/plain"},
			{"http://api.example.test/echo"},
		} {
			r := e.asAgent(append([]string{"curl", "-sS", "-i", "--max-time", "20"}, args...)...)
			if !strings.Contains(r.stdout, " 403 ") || !strings.Contains(r.stdout, "wirken: ") {
				t.Fatalf("%v: want 403 with a wirken: reason; got %q %q", args, r.stdout, r.stderr)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(plainAuth) != 1 || plainAuth[0] != "" {
			t.Fatalf("the plain upstream saw Authorization %q; want one request, with none", plainAuth)
		}
	})

	script := `
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
f = s.makefile("rwb")
banner = f.readline()
f.write(b"PING\n"); f.flush()
print((banner + f.readline()).decode(), end="")
`
	// This client speaks first, so a refusal does not wait for the peek timeout.
	speakFirst := `import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10); s.sendall(b"PING\n"); print(s.recv(100))`

	t.Run("other TCP only by an explicit passthrough rule", func(t *testing.T) {
		r := e.asAgent("/usr/bin/python3", "-c", script, peer.peerIP, "7000").mustSucceed(t)
		if r.stdout != "220 ready\nPING\n" {
			t.Fatalf("through the passthrough rule got %q", r.stdout)
		}
		if raw.accepted.Load() != 1 {
			t.Fatalf("the ruled server accepted %d connections; want 1", raw.accepted.Load())
		}
		r = e.asAgent("/usr/bin/python3", "-c", speakFirst, peer.peerIP, "7001")
		if r.code == 0 || unruled.accepted.Load() != 0 {
			t.Fatalf("without a rule: exit %d, %q; the server accepted %d", r.code, r.stdout, unruled.accepted.Load())
		}
		var spliced, denied bool
		for _, rec := range e.records("conn.passthrough") {
			spliced = spliced || rec["rule"] == "demo-raw"
		}
		for _, rec := range e.records("conn.deny") {
			denied = denied || strings.HasSuffix(fmt.Sprint(rec["dst"]), ":7001")
		}
		if !spliced || !denied {
			t.Fatalf("audit: passthrough by the rule %v, denial of :7001 %v", spliced, denied)
		}
	})

	t.Run("a loopback service only by an explicit passthrough rule", func(t *testing.T) {
		// The kernel steers these to the proxy like the rest, which splices them by the rule
		// and audits them (README, Kernel enforcement: Loopback).
		for _, svc := range []struct {
			host, port, rule string
			srv              *countingListener
		}{{"127.0.0.5", "7000", "demo-raw-lo", rawLo}, {"127.0.0.1", "7002", "demo-raw-lo1", rawLo1}} {
			r := e.asAgent("/usr/bin/python3", "-c", script, svc.host, svc.port).mustSucceed(t)
			if r.stdout != "220 ready\nPING\n" || svc.srv.accepted.Load() != 1 {
				t.Fatalf("through the loopback rule %s got %q; the server accepted %d", svc.rule, r.stdout, svc.srv.accepted.Load())
			}
			var spliced bool
			for _, rec := range e.records("conn.passthrough") {
				spliced = spliced || (rec["rule"] == svc.rule && rec["dst"] == svc.host+":"+svc.port)
			}
			if !spliced {
				t.Fatalf("no conn.passthrough audit record of rule %s to %s:%s", svc.rule, svc.host, svc.port)
			}
		}
		r := e.asAgent("/usr/bin/python3", "-c", speakFirst, "127.0.0.5", "7001")
		if r.code == 0 || unruledLo.accepted.Load() != 0 {
			t.Fatalf("loopback without a rule: exit %d, %q; the server accepted %d", r.code, r.stdout, unruledLo.accepted.Load())
		}
		var denied bool
		for _, rec := range e.records("conn.deny") {
			denied = denied || rec["dst"] == "127.0.0.5:7001"
		}
		if !denied {
			t.Fatal("the refused loopback connection to 127.0.0.5:7001 was not audited")
		}
	})
}
