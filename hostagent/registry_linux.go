package hostagent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/wirken/wirken/bpf"
	"github.com/wirken/wirken/policy"
)

// agentCgroup is one registered agent.
type agentCgroup struct {
	agent policy.Agent
	path  string
	id    uint64
}

// registry maps agent cgroups to agent names, in step with the policy and the kernel map.
type registry struct {
	mount     string // where cgroup2 is mounted
	mountRoot string // which cgroup the mount shows at its top ("/" unless in a cgroup namespace)

	mu     sync.RWMutex
	byID   map[uint64]string
	byName map[string]agentCgroup
}

// name returns the agent whose cgroup has id, or "" if none.
func (r *registry) name(id uint64) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byID[id]
}

func (r *registry) lookup(name string) (agentCgroup, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.byName[name]
	return a, ok
}

func (r *registry) list() []agentCgroup {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]agentCgroup, 0, len(r.byName))
	for _, a := range r.byName {
		out = append(out, a)
	}
	return out
}

// sync creates and registers a cgroup for every agent (create, then register the id, so a new
// agent is never launched into an unregistered cgroup), and unregisters agents that left the
// policy. Their cgroups stay until empty: processes still in them are refused (fail closed).
func (r *registry) sync(agents []policy.Agent, dir string, steer *bpf.Steering, log *slog.Logger) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	keep := make(map[string]bool, len(agents))
	for _, a := range agents {
		keep[a.Name] = true
		path := filepath.Join(dir, a.Name)
		if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating agent cgroup %s: %w", path, err)
		}
		id, err := bpf.CgroupID(path)
		if err != nil {
			return err
		}
		if err := steer.RegisterAgent(id); err != nil {
			return fmt.Errorf("registering agent %s: %w", a.Name, err)
		}
		if old, ok := r.byName[a.Name]; ok && old.id != id {
			delete(r.byID, old.id)
		}
		r.byID[id] = a.Name
		r.byName[a.Name] = agentCgroup{agent: a, path: path, id: id}
	}
	for name, a := range r.byName {
		if keep[name] {
			continue
		}
		if err := steer.UnregisterAgent(a.id); err != nil {
			log.Error("unregistering agent", "agent", name, "err", err)
		}
		delete(r.byID, a.id)
		delete(r.byName, name)
		if err := os.Remove(a.path); err != nil {
			log.Info("agent left the policy; its cgroup stays until its processes exit", "agent", name, "cgroup", a.path)
		}
	}
	return nil
}
