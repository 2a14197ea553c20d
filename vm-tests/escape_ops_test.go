//go:build linux

package vmtests

// The escape agent's further attempts (TestEscapes): each runs as the agent's unprivileged
// user inside the agent cgroup, re-executed from this test binary, and reports an escapeResult.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// resultOf makes an escapeResult of an error: its errno when it carries one, else -1.
func resultOf(err error) escapeResult {
	if err == nil {
		return escapeResult{}
	}
	res := escapeResult{Err: err.Error(), Errno: -1}
	if errno := unix.Errno(0); errors.As(err, &errno) {
		res.Errno = int(errno)
	}
	return res
}

// moreEscapes runs the attempts of TestEscapes; ok is false for an unknown op.
func moreEscapes(args []string) (res escapeResult, ok bool) {
	switch args[0] {
	case "raw": // raw ADDR SNI|- PAYLOAD: connect (TLS with SNI unless -), send, read until EOF
		return rawExchange(args[1], args[2], args[3], false), true
	case "tfo-sendto": // tfo-sendto ADDR PAYLOAD: the payload rides in the SYN (MSG_FASTOPEN)
		return rawExchange(args[1], "-", args[2], true), true
	case "tfo-connect": // tfo-connect ADDR SNI: TCP_FASTOPEN_CONNECT, then a TLS handshake
		fd, sa, err := exactSocket(args[1], unix.SOCK_STREAM)
		if err != nil {
			return resultOf(err), true
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT, 1); err != nil {
			unix.Close(fd)
			return resultOf(fmt.Errorf("setting TCP_FASTOPEN_CONNECT: %w", err)), true
		}
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			return resultOf(err), true
		}
		return handshake(fd, args[2]), true
	case "uring": // uring ADDR SNI: connect through io_uring (IORING_OP_CONNECT), then TLS
		fd, sa, err := exactSocket(args[1], unix.SOCK_STREAM)
		if err != nil {
			return resultOf(err), true
		}
		if err := uringConnect(fd, sa); err != nil {
			unix.Close(fd)
			return resultOf(err), true
		}
		return handshake(fd, args[2]), true
	case "udp-sendmsg": // udp-sendmsg CONNECT_TO SEND_TO: connect a UDP socket, sendmsg elsewhere
		fd, sa, err := exactSocket(args[1], unix.SOCK_DGRAM)
		if err != nil {
			return resultOf(err), true
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, sa); err != nil {
			return resultOf(fmt.Errorf("connecting to %s: %w", args[1], err)), true
		}
		_, to, err := exactSocket(args[2], unix.SOCK_DGRAM) // only for the address
		if err != nil {
			return resultOf(err), true
		}
		_, err = unix.SendmsgN(fd, []byte("x"), nil, to, 0)
		return resultOf(err), true
	case "sendmmsg": // sendmmsg ADDR: two datagrams in one sendmmsg
		fd, sa, err := exactSocket(args[1], unix.SOCK_DGRAM)
		if err != nil {
			return resultOf(err), true
		}
		defer unix.Close(fd)
		n, err := sendmmsg(fd, sa, [][]byte{[]byte("quic-ish 1"), []byte("quic-ish 2")})
		res := resultOf(err)
		res.Detail = strconv.Itoa(n) + " sent"
		if err == nil && n == 0 {
			res.Errno = -1 // nothing sent, without an error
		}
		return res, true
	case "dns-many": // dns-many SERVER SUFFIX N: N unique names with 63-byte labels; Detail = rcode counts
		return dnsMany(args[1], args[2], args[3]), true
	case "unix": // unix PATH REQUEST: connect to a unix socket, send a line, read the answer
		c, err := net.DialTimeout("unix", args[1], 5*time.Second)
		if err != nil {
			return resultOf(err), true
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, args[2]+"\n"); err != nil {
			return resultOf(err), true
		}
		b, err := io.ReadAll(io.LimitReader(c, 4096))
		res := resultOf(err)
		res.Detail = string(b)
		return res, true
	case "fetch": // fetch URL
		return fetch(args[1]), true
	case "read": // read PATH
		b, err := os.ReadFile(args[1])
		res := resultOf(err)
		if err == nil {
			res.Detail = strconv.Itoa(len(b)) + " bytes"
		}
		return res, true
	case "ptrace": // ptrace PID: PTRACE_ATTACH
		pid, _ := strconv.Atoi(args[1])
		runtime.LockOSThread()
		err := unix.PtraceAttach(pid)
		if err == nil {
			unix.PtraceDetach(pid)
		}
		return resultOf(err), true
	case "vm-readv": // vm-readv PID ADDR: process_vm_readv of 64 bytes at ADDR (hex)
		pid, _ := strconv.Atoi(args[1])
		addr, _ := strconv.ParseUint(args[2], 16, 64)
		buf := make([]byte, 64)
		local := []unix.Iovec{{Base: &buf[0]}}
		local[0].SetLen(len(buf))
		remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
		_, err := unix.ProcessVMReadv(pid, local, remote, 0)
		return resultOf(err), true
	case "daemonize": // daemonize OUT URL: setsid + double fork; the grandchild fetches URL
		return daemonize("daemon-child", args[1], args[2]), true
	case "daemon-child": // the first child: fork the grandchild and exit at once
		return daemonize("daemon-grandchild", args[1], args[2]), true
	case "daemon-grandchild": // the grandchild: wait until orphaned, fetch, write the result
		for i := 0; os.Getppid() != 1 && i < 50; i++ {
			time.Sleep(20 * time.Millisecond) // until the first child is gone
		}
		res := fetch(args[2])
		sid, _ := unix.Getsid(0)
		cg, _ := os.ReadFile("/proc/self/cgroup")
		res.Detail = fmt.Sprintf("pid=%d sid=%d ppid=%d cgroup=%s %s", os.Getpid(), sid, os.Getppid(), strings.TrimSpace(string(cg)), res.Detail)
		b, _ := json.Marshal(res)
		if err := os.WriteFile(args[1], b, 0o644); err != nil {
			return resultOf(err), true
		}
		return res, true
	}
	return escapeResult{}, false
}

// rawExchange connects to addr (as written), shakes hands as sni unless it is "-", writes
// payload and reads what comes back until EOF or 10 s. With fastOpen the payload is sent in
// the SYN (sendto MSG_FASTOPEN) instead of after connect. Detail is what came back.
func rawExchange(addr, sni, payload string, fastOpen bool) escapeResult {
	fd, sa, err := exactSocket(addr, unix.SOCK_STREAM)
	if err != nil {
		return resultOf(err)
	}
	if fastOpen {
		err = unix.Sendto(fd, []byte(payload), unix.MSG_FASTOPEN, sa)
	} else {
		err = unix.Connect(fd, sa)
	}
	if err != nil {
		unix.Close(fd)
		return resultOf(err)
	}
	f := os.NewFile(uintptr(fd), "agent-conn")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return resultOf(err)
	}
	if sni != "-" {
		// The agent resolves the name through its (steered) resolver first, as a client would.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		net.DefaultResolver.LookupHost(ctx, sni)
		cancel()
		c = tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if !fastOpen {
		if _, err := io.WriteString(c, payload); err != nil {
			return resultOf(err)
		}
	}
	b, err := io.ReadAll(io.LimitReader(c, 64<<10))
	res := escapeResult{Detail: string(b)}
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) && len(b) == 0 {
		res = resultOf(err)
		res.Detail = string(b)
	}
	return res
}

// handshake shakes hands as sni over the connected socket fd; Detail is the issuer.
func handshake(fd int, sni string) escapeResult {
	f := os.NewFile(uintptr(fd), "agent-conn")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return resultOf(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	net.DefaultResolver.LookupHost(ctx, sni)
	cancel()
	c := tls.Client(conn, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		return resultOf(err)
	}
	return escapeResult{Detail: c.ConnectionState().PeerCertificates[0].Issuer.CommonName}
}

// fetch GETs url as an agent's client would (its resolver, any certificate); Detail is
// "status issuer x-echo-authorization body".
func fetch(url string) escapeResult {
	cl := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := cl.Get(url)
	if err != nil {
		return resultOf(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	issuer := "-"
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		issuer = resp.TLS.PeerCertificates[0].Issuer.CommonName
	}
	return escapeResult{Detail: fmt.Sprintf("status=%d issuer=%q x-echo-authorization=%q body=%s",
		resp.StatusCode, issuer, resp.Header.Get("X-Echo-Authorization"), b)}
}

// daemonize starts this binary as op in a new session, detached from our output, and returns
// once it is started (the first child) or exits (waits for it: the original agent).
func daemonize(op, out, url string) escapeResult {
	exe, err := os.Executable()
	if err != nil {
		return resultOf(err)
	}
	cmd := exec.Command(exe, escapeAgentArg, op, out, url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return resultOf(err)
	}
	if op == "daemon-child" {
		return resultOf(cmd.Wait()) // the first child exits at once, leaving the grandchild
	}
	cmd.Process.Release()
	return escapeResult{Detail: "started " + strconv.Itoa(cmd.Process.Pid)}
}

// dnsMany asks server for n unique names under suffix, each led by three 63-byte labels of
// hex (as exfiltration would encode data), over one connected UDP socket.
func dnsMany(server, suffix, count string) escapeResult {
	n, _ := strconv.Atoi(count)
	c, err := net.Dial("udp", server)
	if err != nil {
		return resultOf(err)
	}
	defer c.Close()
	rcodes := map[string]int{}
	buf := make([]byte, 1500)
	for i := range n {
		var labels []string
		for j := range 3 {
			labels = append(labels, fmt.Sprintf("%063x", uint64(i)*3+uint64(j)))
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(strings.Join(labels, ".")+"."+suffix), dns.TypeA)
		q, err := m.Pack()
		if err != nil {
			return resultOf(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(q); err != nil {
			rcodes["send-error"]++
			continue
		}
		k, err := c.Read(buf)
		if err != nil {
			rcodes["no-answer"]++
			continue
		}
		var r dns.Msg
		if r.Unpack(buf[:k]) != nil || r.Id != m.Id {
			rcodes["bad-answer"]++
			continue
		}
		rcodes[dns.RcodeToString[r.Rcode]]++
	}
	b, _ := json.Marshal(rcodes)
	return escapeResult{Detail: string(b)}
}

// mmsghdr is struct mmsghdr (64-bit Linux).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// sendmmsg sends each datagram to sa in one sendmmsg(2) call.
func sendmmsg(fd int, sa unix.Sockaddr, msgs [][]byte) (int, error) {
	name, namelen := rawSockaddr(sa)
	hdrs := make([]mmsghdr, len(msgs))
	iovs := make([]unix.Iovec, len(msgs))
	for i, m := range msgs {
		iovs[i].Base = &m[0]
		iovs[i].SetLen(len(m))
		hdrs[i].hdr.Name = (*byte)(name)
		hdrs[i].hdr.Namelen = namelen
		hdrs[i].hdr.Iov = &iovs[i]
		hdrs[i].hdr.SetIovlen(1)
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	runtime.KeepAlive(hdrs)
	runtime.KeepAlive(iovs)
	runtime.KeepAlive(msgs)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// rawSockaddr is sa as the kernel reads it.
func rawSockaddr(sa unix.Sockaddr) (unsafe.Pointer, uint32) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		r := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr}
		r.Port = uint16(a.Port>>8) | uint16(a.Port&0xff)<<8 // network order in memory
		return unsafe.Pointer(r), unix.SizeofSockaddrInet4
	case *unix.SockaddrInet6:
		r := &unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.Addr}
		r.Port = uint16(a.Port>>8) | uint16(a.Port&0xff)<<8
		return unsafe.Pointer(r), unix.SizeofSockaddrInet6
	}
	return nil, 0
}

// io_uring, by its raw system calls (include/uapi/linux/io_uring.h).
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

type uringSQE struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, opFlags  uint32
	userData      uint64
	bufIndex      uint16
	personality   uint16
	spliceFdIn    int32
	addr3, pad    uint64
}

const (
	ioringOpConnect       = 16
	ioringOffSQRing       = 0
	ioringOffCQRing       = 0x8000000
	ioringOffSQEs         = 0x10000000
	ioringEnterGetEvents  = 1
	uringCQESize          = 16
	uringSQESize          = 64
	uringConnectUserToken = 0x77697200
)

// uringConnect connects fd to sa with one IORING_OP_CONNECT and waits for its completion.
func uringConnect(fd int, sa unix.Sockaddr) error {
	if unsafe.Sizeof(uringParams{}) != 120 || unsafe.Sizeof(uringSQE{}) != uringSQESize {
		return fmt.Errorf("io_uring structures have the wrong size")
	}
	var p uringParams
	r, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_setup: %w", errno)
	}
	ring := int(r)
	defer unix.Close(ring)
	sqLen := int(p.sqOff.array + p.sqEntries*4)
	cqLen := int(p.cqOff.cqes + p.cqEntries*uringCQESize)
	sq, err := unix.Mmap(ring, ioringOffSQRing, sqLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mapping the submission ring: %w", err)
	}
	defer unix.Munmap(sq)
	cq, err := unix.Mmap(ring, ioringOffCQRing, cqLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mapping the completion ring: %w", err)
	}
	defer unix.Munmap(cq)
	sqes, err := unix.Mmap(ring, ioringOffSQEs, int(p.sqEntries)*uringSQESize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mapping the submission entries: %w", err)
	}
	defer unix.Munmap(sqes)
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

	name, namelen := rawSockaddr(sa)
	tail := atomic.LoadUint32(u32(sq, p.sqOff.tail))
	idx := tail & *u32(sq, p.sqOff.ringMask)
	sqe := (*uringSQE)(unsafe.Pointer(&sqes[idx*uringSQESize]))
	*sqe = uringSQE{opcode: ioringOpConnect, fd: int32(fd), addr: uint64(uintptr(name)), off: uint64(namelen), userData: uringConnectUserToken}
	*u32(sq, p.sqOff.array+idx*4) = idx
	atomic.StoreUint32(u32(sq, p.sqOff.tail), tail+1)
	_, _, errno = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(ring), 1, 1, ioringEnterGetEvents, 0, 0)
	runtime.KeepAlive(name)
	if errno != 0 {
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
	head := atomic.LoadUint32(u32(cq, p.cqOff.head))
	if head == atomic.LoadUint32(u32(cq, p.cqOff.tail)) {
		return fmt.Errorf("io_uring: no completion")
	}
	off := p.cqOff.cqes + (head&*u32(cq, p.cqOff.ringMask))*uringCQESize
	user := *(*uint64)(unsafe.Pointer(&cq[off]))
	res := *(*int32)(unsafe.Pointer(&cq[off+8]))
	atomic.StoreUint32(u32(cq, p.cqOff.head), head+1)
	if user != uringConnectUserToken {
		return fmt.Errorf("io_uring: completion of another request (%#x)", user)
	}
	if res < 0 {
		return fmt.Errorf("io_uring connect: %w", unix.Errno(-res))
	}
	return nil
}
