package hostagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// AgentInfo is what `wirken exec` needs to launch an agent.
type AgentInfo struct {
	Name     string `json:"name"`
	User     string `json:"user,omitempty"`
	Cgroup   string `json:"cgroup"`
	CgroupID uint64 `json:"cgroup_id"`
	CABundle string `json:"ca_bundle"`
	// Env holds the placeholder variables of the credentials the agent's rules inject.
	Env     map[string]string `json:"env,omitempty"`
	CertDir string            `json:"cert_dir,omitempty"` // a directory holding the bundle, for SSL_CERT_DIR

	// Filled in by status only.
	Processes []int        `json:"processes,omitempty"` // pids in the agent's cgroup and below
	Counts    *AgentCounts `json:"counts,omitempty"`
}

// Status is the daemon's answer to `wirken status`.
type Status struct {
	PID             int         `json:"pid"`
	Policy          string      `json:"policy"`
	PolicyDigest    string      `json:"policy_digest"`
	PolicyLoads     uint64      `json:"policy_loads"` // 1 after start, +1 per accepted reload
	VaultGeneration uint64      `json:"vault_generation"`
	ProxyPort       int         `json:"proxy_port"`
	Connections     int         `json:"connections"` // agent connections open now
	Agents          []AgentInfo `json:"agents"`
	// Unregistered counts refusals of connections from no known agent (a process in an
	// unknown cgroup, or a local process dialling the proxy port).
	Unregistered AgentCounts `json:"unregistered"`
	StartedAt    time.Time   `json:"started_at"`
	// Startup is how long each start-up step took (from Run's start to serving the control
	// socket; the process's own start and telemetry set-up come before it).
	Startup []StartupPhase `json:"startup,omitempty"`

	// The daemon's own resources, for watching it under load: goroutines, open file
	// descriptors and their limit, and how often accepting an agent connection failed (out of
	// descriptors) and was retried.
	Goroutines   int    `json:"goroutines"`
	OpenFiles    int    `json:"open_files"`
	FileLimit    uint64 `json:"file_limit"`
	AcceptErrors int64  `json:"accept_errors"`
}

// Client talks to a running daemon over its control socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the control socket at path.
func NewClient(path string) *Client {
	return &Client{socket: path, hc: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Agent asks the daemon for an agent's cgroup and environment.
func (c *Client) Agent(ctx context.Context, name string) (AgentInfo, error) {
	var a AgentInfo
	err := c.do(ctx, http.MethodGet, "/v1/agents/"+url.PathEscape(name), &a)
	return a, err
}

// Status asks the daemon how it is.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", &s)
	return s, err
}

// Reload asks the daemon to re-read its policy.
func (c *Client) Reload(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodPost, "/v1/reload", &s)
	return s, err
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://wirken"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("reaching the daemon at %s (is `wirken run` running?): %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return errors.New(e.Error)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("reading the daemon's answer: %w", err)
	}
	return nil
}
