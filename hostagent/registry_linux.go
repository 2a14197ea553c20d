package hostagent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/wirken/wirken/bpf"
	"github.com/wirken/wirken/policy"
)

// agentCgroup is one registered agent.
type agentCgroup struct {
	agent policy.Agent
	path  string
	id    uint64
	bound bool // an existing cgroup the policy binds (not ours to create or remove)
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
		old, had := r.byName[a.Name]
		var path string
		var id uint64
		var err error
		if a.Cgroup != "" {
			path, id, err = r.bind(a, old, had, dir, steer)
			if errors.Is(err, errBoundMissing) {
				// The unit is stopped: nothing to steer; watchBound binds it once it is back.
				log.Warn("bound cgroup does not exist (its unit is stopped?): bound when it appears",
					"agent", a.Name, "cgroup", path)
				err = nil
			}
		} else {
			if had && old.bound {
				r.unbind(old, steer, log)
			}
			path, id, err = r.create(a, dir, steer)
		}
		if err != nil {
			return err
		}
		if had && old.id != 0 && old.id != id {
			// A recreated or vanished bound cgroup, or an agent switched between bound and
			// unbound: the old id must not stay in the kernel's agents map.
			if err := steer.UnregisterAgent(old.id); err != nil {
				log.Error("unregistering agent's old cgroup", "agent", a.Name, "err", err)
			}
			delete(r.byID, old.id)
		}
		if id != 0 {
			r.byID[id] = a.Name
		}
		r.byName[a.Name] = agentCgroup{agent: a, path: path, id: id, bound: a.Cgroup != ""}
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
		if a.bound {
			r.unbind(a, steer, log) // the cgroup is not ours to remove
			continue
		}
		if err := os.Remove(a.path); err != nil {
			log.Info("agent left the policy; its cgroup stays until its processes exit", "agent", name, "cgroup", a.path)
		}
	}
	return nil
}

// create makes (if needed) and registers agents/<name>.
func (r *registry) create(a policy.Agent, dir string, steer *bpf.Steering) (string, uint64, error) {
	path := filepath.Join(dir, a.Name)
	if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", 0, fmt.Errorf("creating agent cgroup %s: %w", path, err)
	}
	id, err := bpf.CgroupID(path)
	if err != nil {
		return "", 0, err
	}
	if err := steer.RegisterAgent(id); err != nil {
		return "", 0, fmt.Errorf("registering agent %s: %w", a.Name, err)
	}
	return path, id, nil
}

// errBoundMissing: the cgroup a bound agent names does not exist (yet): its unit is stopped.
var errBoundMissing = errors.New("cgroup does not exist")

// bind ties the agent to the existing cgroup its policy names. The cgroup must exist (wirken
// never creates or removes cgroups it does not own), and must be neither inside wirken's own
// tree nor an ancestor of it (that would make the daemon an agent). A missing cgroup returns
// its path and an error wrapping errBoundMissing. Unregistering the old id is the caller's.
func (r *registry) bind(a policy.Agent, old agentCgroup, had bool, dir string, steer *bpf.Steering) (string, uint64, error) {
	rel := a.Cgroup
	if root := filepath.Clean(r.mountRoot); root != "/" {
		if rel != root && !strings.HasPrefix(rel, root+"/") {
			return "", 0, fmt.Errorf("agent %s: cgroup %s is outside this cgroup namespace (%s)", a.Name, a.Cgroup, root)
		}
		rel = strings.TrimPrefix(rel, root)
	}
	path := filepath.Join(r.mount, rel)
	own := filepath.Dir(dir) // <cgroup2>/<root>
	if path == own || strings.HasPrefix(path+"/", own+"/") || strings.HasPrefix(own+"/", path+"/") {
		return "", 0, fmt.Errorf("agent %s: cgroup %s is wirken's own tree or contains it", a.Name, a.Cgroup)
	}
	if had && old.bound && old.path != path {
		if err := steer.Unbind(a.Name); err != nil {
			return "", 0, err
		}
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return path, 0, fmt.Errorf("agent %s: bound cgroup %s: %w", a.Name, a.Cgroup, errBoundMissing)
	} else if err != nil {
		return "", 0, fmt.Errorf("agent %s: bound cgroup %s: %w", a.Name, a.Cgroup, err)
	}
	id, err := steer.Bind(a.Name, path)
	if err != nil {
		return "", 0, err
	}
	return path, id, nil
}

func (r *registry) unbind(a agentCgroup, steer *bpf.Steering, log *slog.Logger) {
	if err := steer.Unbind(a.agent.Name); err != nil {
		log.Error("unbinding agent", "agent", a.agent.Name, "cgroup", a.path, "err", err)
	}
}

// pruneBound removes bound links left for agents that are not bound any more (the policy
// changed while the daemon was down).
func (r *registry) pruneBound(steer *bpf.Steering, log *slog.Logger) {
	names, err := steer.Bound()
	if err != nil {
		log.Error("listing bound agents", "err", err)
		return
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, n := range names {
		if a, ok := r.byName[n]; ok && a.bound {
			continue
		}
		if err := steer.Unbind(n); err != nil {
			log.Error("removing stale bound links", "agent", n, "err", err)
		}
	}
}

// staleBound names the bound agents whose cgroup was recreated (a new id at the same path: the
// unit restarted).
func (r *registry) staleBound() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for name, a := range r.byName {
		if !a.bound {
			continue
		}
		// Gone (the unit stopped) is nothing to steer; once it is back, its id differs.
		if id, err := bpf.CgroupID(a.path); err == nil && id != a.id {
			out = append(out, name)
		}
	}
	return out
}
