package policy

import "testing"

func TestAllowsName(t *testing.T) {
	p, err := Parse("policy.toml", []byte(`version = 1
[agents.a]
user = "nobody"
[agents.b]
user = "nobody"
[[rules]]
name = "api"
agent = "a"
hosts = ["api.example.test", "*.cdn.example.test"]
ports = [443]
[[rules]]
name = "db"
agent = "a"
hosts = ["127.0.0.1", "127.0.0.7"]
ports = [5432, 6379]
mode = "passthrough"
[[rules]]
name = "local-http"
agent = "a"
hosts = ["127.0.0.8"]
ports = [8080]
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		agent, host string
		want        bool
	}{
		{"a", "api.example.test", true},
		{"a", "API.Example.Test.", true},
		{"a", "x.cdn.example.test", true},
		{"a", "cdn.example.test", false},
		{"a", "evil.example.test", false},
		{"b", "api.example.test", false},
		{"nobody", "api.example.test", false},
		{"a", "bad name", false},
	} {
		if got := p.AllowsName(tt.agent, tt.host); got != tt.want {
			t.Errorf("AllowsName(%q, %q) = %v, want %v", tt.agent, tt.host, got, tt.want)
		}
	}
}
