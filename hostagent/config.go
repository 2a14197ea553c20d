package hostagent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/wirken/wirken/vault"
)

// Config is the daemon configuration (wirken.toml). Relative paths are relative to the file.
type Config struct {
	Policy        string `toml:"policy"`
	StateDir      string `toml:"state_dir"`
	ControlSocket string `toml:"control_socket"`

	Vault struct {
		File  string           `toml:"file"`
		Seals []map[string]any `toml:"seals"`
		// UnsealTimeout bounds, in seconds, each seal's unseal of the root key (a KMS that
		// accepts but never answers must not hang the daemon's start or a reload).
		UnsealTimeout float64 `toml:"unseal_timeout"`
	} `toml:"vault"`
	CA struct {
		Cert string `toml:"cert"`
		Key  string `toml:"key"`
	} `toml:"ca"`
	Audit struct {
		Log                string  `toml:"log"`
		VerifierKey        string  `toml:"verifier_key"`
		Origin             string  `toml:"origin"`
		CheckpointEvery    int     `toml:"checkpoint_every"`
		CheckpointInterval float64 `toml:"checkpoint_interval"`
		SegmentMB          int     `toml:"segment_mb"`
		KeepSegments       int     `toml:"keep_segments"`
	} `toml:"audit"`
	Proxy struct {
		Port            int      `toml:"port"`
		UpstreamCAFiles []string `toml:"upstream_ca_files"`
		IPv6            string   `toml:"ipv6"`
		Timeouts                 // read_header_timeout, idle_timeout, ... (timeouts.go)
	} `toml:"proxy"`
	Cgroup struct {
		Root string `toml:"root"`
	} `toml:"cgroup"`
	DNS struct {
		Port            int      `toml:"port"`
		Upstreams       []string `toml:"upstreams"`
		RequireResolved *bool    `toml:"require_resolved"`
	} `toml:"dns"`
	BPF struct {
		PinDir string `toml:"pin_dir"`
	} `toml:"bpf"`
	Log struct {
		Level  string `toml:"level"`
		Format string `toml:"format"`
	} `toml:"log"`
	Metrics struct {
		// Prometheus is a host:port to serve /metrics on; empty serves nothing. Loopback only
		// unless AllowNonLoopback.
		Prometheus       string `toml:"prometheus"`
		AllowNonLoopback bool   `toml:"allow_non_loopback"`
	} `toml:"metrics"`

	// AcceptRollback lets the daemon start on a vault older than the audit log last recorded
	// (set by `wirken run --accept-rollback`, never by the file).
	AcceptRollback bool `toml:"-"`

	path  string             // the file this came from
	seals []vault.SealConfig // Vault.Seals, checked
}

// Seals are the configured vault seals, in order: any one unseals; the first seals a new vault.
func (c *Config) Seals() []vault.SealConfig { return c.seals }

// sealConfig turns one [[vault.seals]] table into a seal configuration. File options are
// relative to the configuration file.
func sealConfig(m map[string]any, base string) (vault.SealConfig, error) {
	sc := vault.SealConfig{Options: map[string]string{}}
	for k, v := range m {
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case bool, int64, float64:
			s = fmt.Sprint(v)
		default:
			return sc, fmt.Errorf("option %s: want a string, number or boolean", k)
		}
		if k == "type" {
			sc.Type = s
			continue
		}
		if s != "" && !filepath.IsAbs(s) && (strings.HasSuffix(k, "_file") || k == "lib" || k == "credentials" || strings.HasPrefix(k, "tls_ca") || strings.HasPrefix(k, "tls_client")) {
			s = filepath.Join(base, s)
		}
		sc.Options[k] = s
	}
	if sc.Type == "" {
		return sc, errors.New("option type: required")
	}
	return sc, nil
}

// Path is the file the configuration was read from.
func (c *Config) Path() string { return c.path }

// CABundle is the PEM bundle (system roots plus the wirken CA) agents are pointed at.
func (c *Config) CABundle() string { return filepath.Join(c.StateDir, "ca-bundle.pem") }

// CACertDir is a public directory holding the same bundle, for runtimes that read SSL_CERT_DIR.
func (c *Config) CACertDir() string { return filepath.Join(c.StateDir, "certs") }

// LoadConfig reads, defaults and validates a configuration file. Errors name the file, and the
// line where the decoder knows it.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig is LoadConfig on bytes already read.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{path: path}
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s:%d:%d: %s", path, pe.Position.Line, pe.Position.Col, pe.Message)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var errs []string
	for _, k := range md.Undecoded() {
		errs = append(errs, fmt.Sprintf("%s: unknown key", keyAt(path, data, k)))
	}
	base := filepath.Dir(path)
	abs := func(p *string, def string) {
		if *p == "" {
			*p = def
		}
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	abs(&c.StateDir, "/var/lib/wirken")
	abs(&c.Policy, "policy.toml")
	abs(&c.ControlSocket, "/run/wirken/control.sock")
	abs(&c.Vault.File, filepath.Join(c.StateDir, "vault.wkv"))
	abs(&c.CA.Cert, filepath.Join(c.StateDir, "ca.pem"))
	abs(&c.CA.Key, filepath.Join(c.StateDir, "ca-key.pem"))
	abs(&c.Audit.Log, filepath.Join(c.StateDir, "audit.jsonl"))
	abs(&c.Audit.VerifierKey, filepath.Join(c.StateDir, "audit.pub"))
	if c.Audit.Origin == "" {
		c.Audit.Origin = "wirken/audit"
	}
	for _, n := range []struct {
		name string
		v    float64
	}{
		{"checkpoint_every", float64(c.Audit.CheckpointEvery)}, {"checkpoint_interval", c.Audit.CheckpointInterval},
		{"segment_mb", float64(c.Audit.SegmentMB)}, {"keep_segments", float64(c.Audit.KeepSegments)},
	} {
		if n.v < 0 {
			errs = append(errs, fmt.Sprintf("%s: must not be negative", keyAt(path, data, toml.Key{"audit", n.name})))
		}
	}
	for i := range c.Proxy.UpstreamCAFiles {
		abs(&c.Proxy.UpstreamCAFiles[i], "")
	}
	if len(c.Vault.Seals) == 0 {
		c.Vault.Seals = []map[string]any{{"type": "aead", "key_file": filepath.Join(c.StateDir, "vault.key")}}
	}
	c.seals = nil
	for i, m := range c.Vault.Seals {
		sc, err := sealConfig(m, base)
		if err == nil {
			err = vault.CheckSealConfig(sc)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: vault.seals[%d]: %v", path, i, err))
			continue
		}
		c.seals = append(c.seals, sc)
	}
	if c.Proxy.Port == 0 {
		c.Proxy.Port = 15001
	}
	if c.Proxy.Port < 1 || c.Proxy.Port > 65535 {
		errs = append(errs, fmt.Sprintf("%s: %d is not a TCP port", keyAt(path, data, toml.Key{"proxy", "port"}), c.Proxy.Port))
	}
	errs = append(errs, c.dnsDefaults(data)...)
	errs = append(errs, c.Proxy.Timeouts.check(path, data)...)
	errs = append(errs, c.checkUnsealTimeout(path, data)...)
	if c.Cgroup.Root == "" {
		c.Cgroup.Root = "wirken"
	}
	if filepath.IsAbs(c.Cgroup.Root) || strings.Contains(c.Cgroup.Root, "..") {
		errs = append(errs, fmt.Sprintf("%s: %q must be a relative path under the cgroup2 mount", keyAt(path, data, toml.Key{"cgroup", "root"}), c.Cgroup.Root))
	}
	if c.BPF.PinDir == "" {
		c.BPF.PinDir = "/sys/fs/bpf/wirken/v1"
	}
	if !strings.HasPrefix(filepath.Clean(c.BPF.PinDir)+"/", "/sys/fs/bpf/") {
		errs = append(errs, fmt.Sprintf("%s: %q must be under /sys/fs/bpf", keyAt(path, data, toml.Key{"bpf", "pin_dir"}), c.BPF.PinDir))
	}
	switch c.Log.Level {
	case "":
		c.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Sprintf("%s: %q is not one of debug, info, warn, error", keyAt(path, data, toml.Key{"log", "level"}), c.Log.Level))
	}
	switch c.Log.Format {
	case "", "auto", "text", "json":
	default:
		errs = append(errs, fmt.Sprintf("%s: %q is not one of auto, text, json", keyAt(path, data, toml.Key{"log", "format"}), c.Log.Format))
	}
	if err := checkMetricsAddr(c.Metrics.Prometheus, c.Metrics.AllowNonLoopback); err != nil {
		errs = append(errs, fmt.Sprintf("%s: %v", keyAt(path, data, toml.Key{"metrics", "prometheus"}), err))
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return c, nil
}

// checkMetricsAddr accepts "" (off) or host:port with a loopback host, unless allowed otherwise.
func checkMetricsAddr(addr string, allowAny bool) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port, such as 127.0.0.1:9464", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: %q is not a TCP port", addr, port)
	}
	if allowAny {
		return nil
	}
	if ip, err := netip.ParseAddr(host); (err == nil && ip.IsLoopback()) || host == "localhost" {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address; metrics name agents and hosts, so serve them beyond this host only with allow_non_loopback = true", addr)
}

// keyAt names a key for an error: "file:line: key", or "file: key" when its line is not known.
func keyAt(path string, data []byte, k toml.Key) string {
	if n := keyLine(data, k); n > 0 {
		return fmt.Sprintf("%s:%d: %s", path, n, k.String())
	}
	return fmt.Sprintf("%s: %s", path, k.String())
}

// keyLine finds the line of a key, 0 if it cannot: the line that sets it inside its table
// (also as a dotted key), else the line of the table or inline table holding it.
// BurntSushi/toml keeps key positions private, and this file is small and flat.
func keyLine(data []byte, k toml.Key) int {
	want := strings.Join(k, ".")
	table := ""
	for i, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			table = flatKey(strings.Trim(strings.SplitN(t, "#", 2)[0], "[] \t"))
			if table == want {
				return i + 1
			}
			continue
		}
		name, _, ok := strings.Cut(t, "=")
		if !ok {
			continue
		}
		full := flatKey(name)
		if table != "" {
			full = table + "." + full
		}
		if full == want {
			return i + 1
		}
	}
	if len(k) > 1 {
		return keyLine(data, k[:len(k)-1])
	}
	return 0
}

// flatKey drops the blanks around a dotted key's dots.
func flatKey(s string) string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return strings.Join(parts, ".")
}
