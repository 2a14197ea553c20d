package hostagent

import (
	"context"
	"path/filepath"
	"time"
)

// rebindEvery is how often bound cgroups are checked for having been recreated.
const rebindEvery = 250 * time.Millisecond

// watchBound re-binds agents whose bound cgroup was recreated (their unit restarted: a new
// cgroup at the same path, with none of wirken's programs attached). Processes the unit starts
// before the check sees the new cgroup are not steered: this narrows that window, it cannot
// close it (see README).
func (d *Daemon) watchBound(ctx context.Context) {
	t := time.NewTicker(rebindEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stale := d.agents.staleBound()
		if len(stale) == 0 {
			continue
		}
		d.reloadMu.Lock()
		pol := d.policy.p.Load()
		err := d.agents.sync(pol.Agents(), filepath.Join(d.root, "agents"), d.steer, d.log)
		d.reloadMu.Unlock()
		if err != nil {
			d.log.Error("re-binding agents whose cgroup was recreated", "agents", stale, "err", err)
			continue
		}
		d.log.Warn("bound cgroup recreated (its unit restarted?): re-bound; processes it started before this were not steered",
			"agents", stale)
	}
}
