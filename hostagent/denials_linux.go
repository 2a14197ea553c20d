package hostagent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/bpf"
)

// denialBudget bounds how many kernel denials are audited per second: an agent looping on a
// refused connect must not fill the disk. Past it they are counted, and the count is audited
// with the next one that fits.
const denialBudget = 50

// auditDenials writes every denial the kernel reports as a kernel.deny audit record until rd
// is closed.
func (d *Daemon) auditDenials(rd *bpf.DenialReader, log *slog.Logger) {
	var (
		window     time.Time
		inWindow   int
		suppressed int
	)
	for {
		den, err := rd.Read()
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil {
			log.Error("reading kernel denials", "err", err)
			continue
		}
		if now := time.Now(); now.Sub(window) >= time.Second {
			window, inWindow = now, 0
		}
		if inWindow >= denialBudget {
			suppressed++
			continue
		}
		inWindow++
		rec := audit.Record{
			Type: "kernel.deny", Agent: d.agents.name(den.CgroupID), Decision: "deny",
			Reason: den.Hook + " refused", PID: den.PID, UID: den.UID, Comm: den.Comm,
			Detail: fmt.Sprintf("cgroup %d family %d protocol %d", den.CgroupID, den.Family, den.Protocol),
		}
		if den.Addr.IsValid() {
			rec.Dst = den.Addr.String()
		}
		if den.Hook == "sock_create" {
			rec.Detail += fmt.Sprintf(" type %d", den.SockType)
		}
		if suppressed > 0 {
			rec.Detail += fmt.Sprintf("; %d more denials not recorded (over %d a second)", suppressed, denialBudget)
			suppressed = 0
		}
		if _, err := d.audit.Append(rec); err != nil {
			log.Error("audit log write failed", "err", err)
		}
	}
}
