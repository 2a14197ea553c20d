package hostagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type peerKey struct{}

// serveControl serves the root-only control socket: peers are checked with SO_PEERCRED, and
// the socket file is 0600 in a 0700 directory.
func (d *Daemon) serveControl() (io.Closer, error) {
	path := d.cfg.ControlSocket
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating control socket dir: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use: is another wirken daemon running?", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("securing control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agents/{name}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := d.agents.lookup(r.PathValue("name"))
		if !ok {
			httpError(w, http.StatusNotFound, fmt.Sprintf("no agent %q in the policy", r.PathValue("name")))
			return
		}
		writeJSON(w, d.agentInfo(a))
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.status())
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Reload(); err != nil {
			httpError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		writeJSON(w, d.status())
	})
	srv := &http.Server{
		Handler: rootOnly(mux),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerUID(c))
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("control socket stopped", "err", err)
		}
	}()
	return srv, nil
}

func (d *Daemon) agentInfo(a agentCgroup) AgentInfo {
	return AgentInfo{Name: a.agent.Name, User: a.agent.User, Cgroup: a.path, CgroupID: a.id, CABundle: d.cfg.CABundle(), CertDir: d.cfg.CACertDir(),
		Env: d.policy.p.Load().AgentEnv(a.agent.Name)}
}

func (d *Daemon) status() Status {
	p := d.policy.p.Load()
	st := Status{PID: os.Getpid(), Policy: d.cfg.Policy, PolicyDigest: p.Digest(),
		VaultGeneration: d.vault.Generation(), ProxyPort: d.cfg.Proxy.Port}
	st.StartedAt = d.started.UTC()
	st.Startup = d.startup
	st.PolicyLoads = d.policyLoad.Load()
	if d.proxy != nil {
		st.Connections = d.proxy.Connections()
		st.AcceptErrors = d.proxy.AcceptErrors()
	}
	st.Goroutines, st.OpenFiles, st.FileLimit = runtime.NumGoroutine(), openFiles(), fileLimit()
	counts := d.counts.snapshot()
	st.Unregistered = counts[""]
	for _, a := range d.agents.list() {
		info := d.agentInfo(a)
		if procs, err := cgroupProcs(a.path); err == nil {
			for _, pids := range procs {
				info.Processes = append(info.Processes, pids...)
			}
			sort.Ints(info.Processes)
		}
		c := counts[a.agent.Name]
		info.Counts = &c
		st.Agents = append(st.Agents, info)
	}
	sort.Slice(st.Agents, func(i, j int) bool { return st.Agents[i].Name < st.Agents[j].Name })
	return st
}

// peerUID is the uid of the process at the other end of a unix socket, or -1.
func peerUID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	_ = raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

func rootOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if uid, _ := r.Context().Value(peerKey{}).(int); uid != 0 {
			httpError(w, http.StatusForbidden, "the control socket is for root only")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
