package hostagent

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/wirken/wirken/internal/fuzzseed"
)

// errLine is one line of a configuration error: the file, then a line (and column) or not.
var errLine = regexp.MustCompile(`^/etc/wirken/wirken\.toml(?::(\d+)(?::\d+)?)?: \S`)

// FuzzParseConfig: wirken.toml parsing and validation. A rejected file gets errors that each
// name the file and, when they give a line, a line of the file; an accepted one has every
// path absolute and every setting within its checked range, and parses the same again.
func FuzzParseConfig(f *testing.F) {
	seeds := fuzzseed.New(f)
	example, err := os.ReadFile("../configs/wirken.toml")
	if err != nil {
		f.Fatal(err)
	}
	seeds.Add(string(example))
	for _, s := range []string{
		"",
		"policy = \"p.toml\"\n[proxy]\nport = 70000\n",
		"proxy.port = 0\ndns.port = 15001\n",
		"proxy = { port = -1, ipv6 = \"sometimes\" }\n",
		"[log]\nlevel = \"loud\"\nformat = \"xml\"\n[cgroup]\nroot = \"/abs\"\n[bpf]\npin_dir = \"/tmp/x\"\n",
		"[[vault.seals]]\ntype = \"aead\"\nkey_file = \"k\"\n[[vault.seals]]\ntype = \"nope\"\n",
		"[audit]\ncheckpoint_every = -1\nsegment_mb = -3\nbogus = 1\n",
		"[dns]\nupstreams = [\"127.0.0.1:15053\", \"not an address\"]\nrequire_resolved = false\n",
		"[metrics]\nprometheus = \"0.0.0.0:9464\"\n",
		"[proxy]\nport = 'x'\n",
		"[ proxy ]\n port  =  1\n[ dns ] # c\nport = 1\n",
	} {
		seeds.Add(s)
	}
	const path = "/etc/wirken/wirken.toml"
	f.Fuzz(func(t *testing.T, src string) {
		c, err := ParseConfig(path, []byte(src))
		if err != nil {
			if c != nil {
				t.Fatal("a configuration returned with an error")
			}
			lines := strings.Count(src, "\n") + 1
			for _, l := range strings.Split(err.Error(), "\n") {
				m := errLine.FindStringSubmatch(l)
				if m == nil {
					t.Fatalf("error line %q does not start with the file name", l)
				}
				if m[1] != "" {
					if n, _ := strconv.Atoi(m[1]); n < 1 || n > lines {
						t.Fatalf("error line %q names line %s of a %d-line file", l, m[1], lines)
					}
				}
			}
			return
		}
		for _, p := range []string{c.Policy, c.StateDir, c.ControlSocket, c.Vault.File, c.CA.Cert, c.CA.Key, c.Audit.Log, c.Audit.VerifierKey} {
			if !filepath.IsAbs(p) {
				t.Fatalf("path %q is not absolute", p)
			}
		}
		switch {
		case c.Proxy.Port < 1 || c.Proxy.Port > 65535, c.DNS.Port < 1 || c.DNS.Port > 65535, c.DNS.Port == c.Proxy.Port:
			t.Fatalf("ports %d and %d accepted", c.Proxy.Port, c.DNS.Port)
		case filepath.IsAbs(c.Cgroup.Root) || strings.Contains(c.Cgroup.Root, ".."):
			t.Fatalf("cgroup root %q accepted", c.Cgroup.Root)
		case !strings.HasPrefix(filepath.Clean(c.BPF.PinDir)+"/", "/sys/fs/bpf/"):
			t.Fatalf("pin dir %q accepted", c.BPF.PinDir)
		case len(c.Seals()) == 0:
			t.Fatal("no seal")
		case c.DNS.RequireResolved == nil, c.Proxy.IPv6 != "proxy" && c.Proxy.IPv6 != "refuse":
			t.Fatalf("dns/ipv6 defaults not filled: %+v", c.DNS)
		case c.Audit.CheckpointEvery < 0 || c.Audit.CheckpointInterval < 0 || c.Audit.SegmentMB < 0 || c.Audit.KeepSegments < 0:
			t.Fatalf("negative audit setting accepted: %+v", c.Audit)
		}
		for _, s := range c.Seals() {
			if s.Type == "" {
				t.Fatalf("seal without a type: %+v", s)
			}
		}
		if err := checkMetricsAddr(c.Metrics.Prometheus, c.Metrics.AllowNonLoopback); err != nil {
			t.Fatalf("metrics address accepted: %v", err)
		}
		again, err := ParseConfig(path, []byte(src))
		if err != nil || again.Proxy.Port != c.Proxy.Port || again.DNS.Port != c.DNS.Port || again.Policy != c.Policy || len(again.Seals()) != len(c.Seals()) {
			t.Fatalf("parsing again gave %+v, %v", again, err)
		}
	})
}
