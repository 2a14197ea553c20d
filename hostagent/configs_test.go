package hostagent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/wirken/wirken/configs"
	"github.com/wirken/wirken/policy"
)

// TestConfigsParse parses every file shipped in configs/, so an example can never rot.
func TestConfigsParse(t *testing.T) {
	files, err := filepath.Glob("../configs/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no files in configs/")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			switch base := filepath.Base(f); {
			case base == "wirken.toml":
				c, err := LoadConfig(f)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(c.Policy); err != nil {
					t.Fatalf("the config's policy %s: %v", c.Policy, err)
				}
			case strings.HasSuffix(base, ".toml"):
				p, err := policy.Load(f)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Agents()) == 0 {
					t.Fatal("example policy has no agents")
				}
			case base == "policies":
				examples, _ := filepath.Glob(filepath.Join(f, "*.toml"))
				if len(examples) < 7 {
					t.Fatalf("only %d example policies in %s", len(examples), f)
				}
				for _, e := range examples {
					if _, err := policy.Load(e); err != nil {
						t.Errorf("%s: %v", e, err)
					}
				}
			case strings.HasSuffix(base, ".yaml"):
				checkCollectorConfig(t, f)
			case strings.HasSuffix(base, ".service"):
				checkUnit(t, f)
			case base == "embed.go":
				checkEmbedded(t, files)
			default:
				t.Fatalf("no test parses %s: add one here", base)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"unknown key", "[proxy]\nprot = 1\n", "wirken.toml:2: proxy.prot: unknown key"},
		{"bad port", "[proxy]\nport = 70000\n", "wirken.toml:2: proxy.port: 70000 is not a TCP port"},
		{"bad seal type", "[[vault.seals]]\ntype = \"rot13\"\n", `wirken.toml: vault.seals[0]: `},
		{"seal option missing", "[[vault.seals]]\ntype = \"transit\"\n", `wirken.toml: vault.seals[0]: seal transit: option address: required`},
		{"seal without type", "[[vault.seals]]\nkey_file = \"k\"\n", `wirken.toml: vault.seals[0]: option type: required`},
		{"syntax", "policy = = 1\n", "wirken.toml:1:"},
		{"pin dir outside bpffs", "[bpf]\npin_dir = \"/tmp/x\"\n", `wirken.toml:2: bpf.pin_dir: "/tmp/x" must be under /sys/fs/bpf`},
		{"metrics beyond loopback", "[metrics]\nprometheus = \"0.0.0.0:9464\"\n", `wirken.toml:2: metrics.prometheus: "0.0.0.0:9464" is not a loopback address`},
		{"metrics without a port", "[metrics]\nprometheus = \"127.0.0.1\"\n", `wirken.toml:2: metrics.prometheus: "127.0.0.1": want host:port`},
		{"cgroup escape", "[cgroup]\nroot = \"../x\"\n", `wirken.toml:2: cgroup.root: "../x" must be a relative path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("/etc/wirken/wirken.toml", []byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseConfigMetricsAllowed(t *testing.T) {
	for _, src := range []string{"[metrics]\nprometheus = \"127.0.0.1:9464\"\n", "[metrics]\nprometheus = \"[::1]:9464\"\n",
		"[metrics]\nprometheus = \"0.0.0.0:9464\"\nallow_non_loopback = true\n"} {
		c, err := ParseConfig("/etc/wirken/wirken.toml", []byte(src))
		if err != nil || c.Metrics.Prometheus == "" {
			t.Errorf("%q: %v", src, err)
		}
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig("/etc/wirken/wirken.toml", []byte("state_dir = \"state\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Seals()) != 1 || c.Seals()[0].Type != "aead" || c.Seals()[0].Options["key_file"] != "/etc/wirken/state/vault.key" {
		t.Fatalf("default seal: %+v", c.Seals())
	}
	if c.StateDir != "/etc/wirken/state" || c.Vault.File != "/etc/wirken/state/vault.wkv" ||
		c.Policy != "/etc/wirken/policy.toml" || c.Proxy.Port != 15001 || c.BPF.PinDir != "/sys/fs/bpf/wirken/v1" {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

// checkCollectorConfig parses an OTel Collector config and checks that every pipeline names
// components that are defined.
func checkCollectorConfig(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Receivers  map[string]any `yaml:"receivers"`
		Processors map[string]any `yaml:"processors"`
		Exporters  map[string]any `yaml:"exporters"`
		Service    struct {
			Pipelines map[string]struct {
				Receivers  []string `yaml:"receivers"`
				Processors []string `yaml:"processors"`
				Exporters  []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if _, ok := cfg.Service.Pipelines["traces"]; !ok {
		t.Fatal("no traces pipeline")
	}
	for name, p := range cfg.Service.Pipelines {
		for kind, list := range map[string][]string{"receiver": p.Receivers, "processor": p.Processors, "exporter": p.Exporters} {
			defined := map[string]map[string]any{"receiver": cfg.Receivers, "processor": cfg.Processors, "exporter": cfg.Exporters}[kind]
			for _, c := range list {
				if _, ok := defined[c]; !ok {
					t.Errorf("pipeline %s uses undefined %s %q", name, kind, c)
				}
			}
		}
	}
}

// checkUnit parses a systemd unit: sections, key=value lines, and the settings install relies on.
func checkUnit(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]map[string][]string{}
	var cur string
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			cur = strings.Trim(line, "[]")
			sections[cur] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || cur == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, i+1, line)
			}
			sections[cur][k] = append(sections[cur][k], v)
		}
	}
	svc := sections["Service"]
	if sections["Unit"] == nil || svc == nil || sections["Install"] == nil {
		t.Fatalf("%s: want [Unit], [Service] and [Install] sections, have %v", path, sections)
	}
	if got := svc["ExecStart"]; len(got) != 1 || !strings.HasPrefix(got[0], unitBinary+" run") {
		t.Fatalf("%s: ExecStart = %q; install rewrites %s, so it must start with it", path, got, unitBinary)
	}
	for k, want := range map[string]string{"Delegate": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes", "Restart": "on-failure"} {
		if got := svc[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s: %s = %q, want %q", path, k, got, want)
		}
	}
}

// checkEmbedded checks that the binary embeds every example in configs/.
func checkEmbedded(t *testing.T, files []string) {
	t.Helper()
	for _, f := range files {
		base := filepath.Base(f)
		if st, err := os.Stat(f); err != nil {
			t.Fatal(err)
		} else if strings.HasSuffix(base, ".go") || st.IsDir() {
			continue // the examples under policies/ are for reading; install lays out the top level
		}
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := configs.Files.ReadFile(base)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("configs.Files lacks %s (%v): add it to the go:embed line", base, err)
		}
	}
}
