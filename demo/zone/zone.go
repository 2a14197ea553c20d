// Package zone is a tiny DNS server for throwaway networks (make demo, the end-to-end tests):
// IPv4 A records it is given, and a log of the names it was asked. Other record types of a
// known name get an empty answer, unknown names NXDOMAIN.
package zone

import (
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Server answers on one loopback port, over UDP and TCP.
type Server struct {
	// Addr is "127.0.0.1:port".
	Addr string

	mu      sync.Mutex
	records map[string]string // lower-case name without the trailing dot -> IPv4 address
	asked   []string
	servers []*dns.Server
}

// Start serves records (name -> IPv4 address) on a free port of 127.0.0.1 until Close.
func Start(records map[string]string) (*Server, error) {
	pc, ln, err := listenPair()
	if err != nil {
		return nil, fmt.Errorf("starting a DNS server: %w", err)
	}
	z := &Server{Addr: pc.LocalAddr().String(), records: map[string]string{}}
	for name, ip := range records {
		z.Set(name, ip)
	}
	z.servers = []*dns.Server{{PacketConn: pc, Handler: z}, {Listener: ln, Handler: z}}
	for _, s := range z.servers {
		go s.ActivateAndServe()
	}
	return z, nil
}

// listenPair listens on one loopback port for both UDP and TCP. The port is the kernel's pick
// for UDP; another process may hold it for TCP, so it tries again with a new pick.
func listenPair() (net.PacketConn, net.Listener, error) {
	var err error
	for range 20 {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return nil, nil, err
		}
		var ln net.Listener
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			return pc, ln, nil
		}
		pc.Close()
	}
	return nil, nil, err
}

func norm(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

// Set points name at the IPv4 address ip from the next query on.
func (z *Server) Set(name, ip string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.records[norm(name)] = ip
}

// Queries returns the names asked so far, in order (without the trailing dot).
func (z *Server) Queries() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]string(nil), z.asked...)
}

// Asked reports whether name was asked.
func (z *Server) Asked(name string) bool {
	for _, q := range z.Queries() {
		if q == norm(name) {
			return true
		}
	}
	return false
}

// ServeDNS answers one query.
func (z *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := norm(q.Name)
		z.mu.Lock()
		z.asked = append(z.asked, name)
		ip, ok := z.records[name]
		z.mu.Unlock()
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 600}, A: net.ParseIP(ip)})
		}
	}
	w.WriteMsg(m)
}

// Close stops the server.
func (z *Server) Close() {
	for _, s := range z.servers {
		s.Shutdown()
	}
}
