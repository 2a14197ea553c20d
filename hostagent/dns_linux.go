package hostagent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/wirken/wirken/audit"
	"github.com/wirken/wirken/resolver"
)

// dnsListeners are the resolver's sockets: UDP and TCP on 127.0.0.1 and, where the host has
// IPv6, [::1]. They are opened before steering starts, so steered DNS always finds them.
type dnsListeners struct {
	udp []net.PacketConn
	tcp []net.Listener
}

func listenDNS(addrs []netip.AddrPort, log *slog.Logger) (*dnsListeners, error) {
	l := &dnsListeners{}
	for i, a := range addrs {
		pc, err := net.ListenPacket("udp", a.String())
		if err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp", a.String()); err == nil {
				l.udp, l.tcp = append(l.udp, pc), append(l.tcp, ln)
				continue
			}
			pc.Close()
		}
		if i == 0 {
			l.close()
			return nil, fmt.Errorf("listening for agents' DNS on %s: %w", a, err)
		}
		log.Warn("no resolver listener on IPv6 loopback; agents' DNS over IPv6 will go unanswered", "err", err)
	}
	return l, nil
}

func (l *dnsListeners) close() {
	for _, c := range l.udp {
		c.Close()
	}
	for _, c := range l.tcp {
		c.Close()
	}
}

// serveDNS serves r on every listener until stop is called.
func (l *dnsListeners) serve(r *resolver.Resolver, log *slog.Logger) (stop func()) {
	var wg sync.WaitGroup
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				log.Error("resolver stopped", "err", err)
			}
		}()
	}
	for _, pc := range l.udp {
		run(func() error { return r.ServeUDP(pc) })
	}
	for _, ln := range l.tcp {
		run(func() error { return r.ServeTCP(ln) })
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		r.Shutdown(ctx)
		l.close()
		wg.Wait()
	}
}

// dnsIdentifier names the agent behind a query from the kernel's records.
type dnsIdentifier struct{ d *Daemon }

func (i dnsIdentifier) QueryOrigin(client, local netip.AddrPort) (resolver.Origin, error) {
	o, err := i.d.steer.QueryOrigin(client, local)
	if err != nil {
		return resolver.Origin{}, err
	}
	return resolver.Origin{Agent: i.d.agents.name(o.CgroupID), Dst: o.Dst, PID: o.PID, UID: o.UID, Comm: o.Comm}, nil
}

func (i dnsIdentifier) Origin(client, local netip.AddrPort) (resolver.Origin, error) {
	o, err := i.d.steer.Origin(client, local)
	if err != nil {
		return resolver.Origin{}, err
	}
	return resolver.Origin{Agent: i.d.agents.name(o.CgroupID), Dst: o.Dst, PID: o.PID, UID: o.UID, Comm: o.Comm}, nil
}

func (l *livePolicy) AllowsName(agent, host string) bool { return l.p.Load().AllowsName(agent, host) }

// dnsRecorder writes agents' DNS queries to the audit log: an allowed one durably before it is
// forwarded upstream, a refused one after.
type dnsRecorder struct{ d *Daemon }

func (r dnsRecorder) Query(q resolver.Query) error {
	typ := "dns.query"
	if q.Decision != "allow" {
		typ = "dns.deny"
	}
	_, err := r.d.audit.Append(audit.Record{
		Type: typ, Agent: q.Agent, Host: q.Name, Decision: q.Decision, Reason: q.Reason,
		Detail: q.Type, Dst: q.Dst.String(), PID: q.PID, UID: q.UID, Comm: q.Comm,
	})
	return err
}
