package hostagent

import (
	"strings"
	"testing"
	"time"
)

func TestProxyTimeouts(t *testing.T) {
	c, err := ParseConfig("/etc/wirken/wirken.toml", []byte("[proxy]\nport = 15001\n"))
	if err != nil {
		t.Fatal(err)
	}
	peek, header, idle, dial, resp := c.Proxy.Timeouts.Durations()
	if peek != 10*time.Second || header != 30*time.Second || idle != 90*time.Second || dial != 10*time.Second || resp != 10*time.Minute {
		t.Fatalf("defaults: %v %v %v %v %v", peek, header, idle, dial, resp)
	}
	c, err = ParseConfig("/etc/wirken/wirken.toml", []byte("[proxy]\nread_header_timeout = 2.5\nupstream_response_header_timeout = 3\nidle_timeout = 4\nfirst_byte_timeout = 1\nupstream_dial_timeout = 0.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	peek, header, idle, dial, resp = c.Proxy.Timeouts.Durations()
	if peek != time.Second || header != 2500*time.Millisecond || idle != 4*time.Second || dial != 500*time.Millisecond || resp != 3*time.Second {
		t.Fatalf("set: %v %v %v %v %v", peek, header, idle, dial, resp)
	}
	_, err = ParseConfig("/etc/wirken/wirken.toml", []byte("[proxy]\nport = 15001\n\nidle_timeout = -1\n"))
	if err == nil || !strings.Contains(err.Error(), "/etc/wirken/wirken.toml:4: proxy.idle_timeout:") {
		t.Fatalf("a negative timeout: %v; want an error naming file, line and field", err)
	}
	for _, v := range []string{"nan", "+inf", "-inf"} { // TOML has them; NaN fails every comparison
		_, err = ParseConfig("/etc/wirken/wirken.toml", []byte("[proxy]\nidle_timeout = "+v+"\n"))
		if err == nil || !strings.Contains(err.Error(), "/etc/wirken/wirken.toml:2: proxy.idle_timeout:") {
			t.Errorf("idle_timeout = %s: %v; want an error naming file, line and field", v, err)
		}
	}
}

func TestUnsealTimeout(t *testing.T) {
	c, err := ParseConfig("/etc/wirken/wirken.toml", []byte("[vault]\n"))
	if err != nil || c.UnsealTimeout() != 30*time.Second {
		t.Fatalf("default unseal timeout: %v, %v; want 30s", c, err)
	}
	c, err = ParseConfig("/etc/wirken/wirken.toml", []byte("[vault]\nunseal_timeout = 2.5\n"))
	if err != nil || c.UnsealTimeout() != 2500*time.Millisecond {
		t.Fatalf("unseal_timeout = 2.5: %v; want 2.5s", err)
	}
	_, err = ParseConfig("/etc/wirken/wirken.toml", []byte("[vault]\nunseal_timeout = -3\n"))
	if err == nil || !strings.Contains(err.Error(), "/etc/wirken/wirken.toml:2: vault.unseal_timeout:") {
		t.Fatalf("a negative unseal timeout: %v; want an error naming file, line and field", err)
	}
	_, err = ParseConfig("/etc/wirken/wirken.toml", []byte("[vault]\nunseal_timeout = nan\n"))
	if err == nil || !strings.Contains(err.Error(), "/etc/wirken/wirken.toml:2: vault.unseal_timeout:") {
		t.Fatalf("unseal_timeout = nan: %v; want an error naming file, line and field", err)
	}
}
