package hostagent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

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
