//go:build linux

package vmtests

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// goClient is an unmodified Go HTTPS client: it trusts what the environment says
// (SSL_CERT_FILE, SSL_CERT_DIR) and nothing else. With -dir-only it forgets SSL_CERT_FILE
// first, to show that SSL_CERT_DIR alone is enough.
const goClient = `package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-dir-only" {
		os.Unsetenv("SSL_CERT_FILE")
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.2:443")
	}}
	resp, err := (&http.Client{Transport: tr}).Get("https://api.example.test/echo")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s", resp.StatusCode, b)
}
`

// TestClientsTrustThroughExecEnv runs curl, Python, Node and Go as unmodified agents: each
// reaches the intercepted upstream with nothing but the environment `wirken exec` sets, and
// without that environment the same client refuses wirken's certificate.
func TestClientsTrustThroughExecEnv(t *testing.T) {
	e := newEnv(t)
	python, node := "/usr/bin/python3", "/usr/bin/node"
	for _, p := range []string{python, node} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s is required (make deps installs python3 and nodejs): %v", p, err)
		}
	}

	// Build the Go client where the agent user can run it.
	dir := filepath.Join(e.dir, "goclient")
	os.MkdirAll(dir, 0o755)
	write(t, filepath.Join(dir, "go.mod"), []byte("module goclient\n\ngo 1.22\n"))
	write(t, filepath.Join(dir, "main.go"), []byte(goClient))
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goBin, "build", "-o", filepath.Join(dir, "client"), ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the Go client: %v\n%s", err, out)
	}

	py := `import socket, ssl
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(("127.0.0.2", 443), timeout=20), server_hostname="api.example.test")
s.sendall(b"GET /echo HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
print(data.split(b"\r\n")[0].decode(), data.split(b"\r\n\r\n", 1)[1].decode())
`
	js := `const https = require("https");
https.get({host: "127.0.0.2", port: 443, servername: "api.example.test", path: "/echo", headers: {Host: "api.example.test"}}, r => {
  let b = ""; r.on("data", d => b += d); r.on("end", () => console.log(r.statusCode, b));
}).on("error", e => { console.error(e.message); process.exit(1); });
`
	clients := []struct {
		name string
		argv []string
	}{
		{"curl", curlArgs("api.example.test", "127.0.0.2", "/echo", "--fail")},
		{"python3", []string{python, "-c", py}},
		{"node", []string{node, "-e", js}},
		{"go", []string{filepath.Join(dir, "client")}},
		{"go, SSL_CERT_DIR only", []string{filepath.Join(dir, "client"), "-dir-only"}},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			before := len(e.api.seen())
			r := e.asAgent(c.argv...)
			if r.code != 0 || !strings.Contains(r.stdout, `"path":"/echo"`) {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			if c.name != "curl" && !strings.Contains(r.stdout, "200") {
				t.Fatalf("no 200 in %q", r.stdout)
			}
			seen := e.api.seen()
			if len(seen) != before+1 || seen[len(seen)-1] != "Bearer "+e.canary {
				t.Fatalf("upstream saw %q; want one request with the credential injected", seen[before:])
			}
		})
	}

	// The JVM reads none of the variables: the README's recipe, a truststore of the JDK's roots
	// plus the wirken CA, named in JAVA_TOOL_OPTIONS.
	t.Run("java with the README's truststore", func(t *testing.T) {
		for _, tool := range []string{"java", "keytool"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Fatalf("%s is required (make deps installs openjdk-17-jdk-headless): %v", tool, err)
			}
		}
		jdir := filepath.Join(e.dir, "java")
		os.MkdirAll(jdir, 0o755)
		store := filepath.Join(jdir, "agent.jks")
		roots, err := os.ReadFile("/etc/ssl/certs/java/cacerts")
		if err != nil {
			t.Fatal(err)
		}
		write(t, store, roots)
		imp := exec.Command("keytool", "-importcert", "-noprompt", "-alias", "wirken", "-file", filepath.Join(e.dir, "state", "ca.pem"),
			"-keystore", store, "-storepass", "changeit")
		if out, err := imp.CombinedOutput(); err != nil {
			t.Fatalf("keytool: %v\n%s", err, out)
		}
		os.Chmod(store, 0o644)
		write(t, filepath.Join(jdir, "hosts"), []byte("127.0.0.2 api.example.test\n"))
		write(t, filepath.Join(jdir, "Client.java"), []byte(`import java.net.*;
public class Client {
  public static void main(String[] a) throws Exception {
    HttpURLConnection c = (HttpURLConnection) new URL("https://api.example.test/echo").openConnection();
    System.out.println(c.getResponseCode() + " " + new String(c.getInputStream().readAllBytes()));
  }
}
`))
		java := []string{"java", "-Djdk.net.hosts.file=" + filepath.Join(jdir, "hosts"), filepath.Join(jdir, "Client.java")}
		opts := "JAVA_TOOL_OPTIONS=-Djavax.net.ssl.trustStore=" + store + " -Djavax.net.ssl.trustStorePassword=changeit"
		before := len(e.api.seen())
		r := e.asAgent(append([]string{"env", opts}, java...)...)
		if r.code != 0 || !strings.Contains(r.stdout, `200 {"host":"api.example.test"`) {
			t.Fatalf("java with the truststore: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if seen := e.api.seen(); len(seen) != before+1 || seen[len(seen)-1] != "Bearer "+e.canary {
			t.Fatalf("upstream saw %q", seen[before:])
		}
		r = e.asAgent(java...)
		if r.code == 0 || !strings.Contains(r.stderr, "PKIX") {
			t.Fatalf("java without the truststore: exit %d %q; want a PKIX refusal", r.code, r.stderr)
		}
	})

	// The same clients without the trust variables refuse the interception certificate: the
	// environment, not some system-wide trust, is what made them work.
	unset := []string{"env"}
	for _, v := range []string{"SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"} {
		unset = append(unset, "-u", v)
	}
	for _, c := range clients[:4] {
		t.Run(c.name+" without the environment", func(t *testing.T) {
			before := len(e.api.seen())
			r := e.asAgent(append(unset, c.argv...)...)
			if r.code == 0 {
				t.Fatalf("%s trusted wirken's certificate without the environment: %s", c.name, r.stdout)
			}
			if !strings.Contains(strings.ToLower(r.stderr), "certificat") {
				t.Errorf("%s failed, but not on the certificate: %s", c.name, r.stderr)
			}
			if got := len(e.api.seen()); got != before {
				t.Fatalf("the upstream received %d requests", got-before)
			}
		})
	}
}
