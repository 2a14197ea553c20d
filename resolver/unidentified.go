package resolver

import (
	"fmt"
	"net"
)

// The audit reasons for traffic to the resolver that no agent's steering explains (an agent
// that connected straight to the resolver's TCP port, or a process outside every agent): a
// TCP connection is closed unanswered, a UDP query answered REFUSED.
const (
	unidentifiedTCP = "DNS over TCP refused: not an agent's steered connection"
	unidentifiedUDP = "DNS query refused: sender is not a known agent"
)

// recordUnidentified logs and audits one refusal. Any local process can cause them, so at
// most 20 a second (a burst of 20) are logged and recorded; the next record counts the ones
// left out.
func (r *Resolver) recordUnidentified(remote, local net.Addr, o Origin, reason string) {
	if !r.unidentified.AllowN(r.cfg.Now(), 1) {
		r.unidentifiedDropped.Add(1)
		return
	}
	r.cfg.Logger.Info(reason, "from", remote.String())
	if r.cfg.Recorder == nil {
		return
	}
	if n := r.unidentifiedDropped.Swap(0); n > 0 {
		reason = fmt.Sprintf("%s (and %d more not recorded)", reason, n)
	}
	o.Dst = addrPort(local)
	if err := r.cfg.Recorder.Query(Query{Origin: o, Decision: "deny", Reason: reason}); err != nil {
		r.cfg.Logger.Error("refused DNS connection not recorded in the audit log", "err", err)
	}
}
