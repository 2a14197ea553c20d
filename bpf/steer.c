// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * wirken steering programs, attached (as pinned bpf_links) to the agents/
 * cgroup. They tie every socket of an agent process to its identity, steer
 * its TCP into the local proxy and its DNS into the local resolver, and deny
 * everything else:
 *
 *   cgroup/connect4, cgroup/connect6
 *     identity = bpf_get_current_ancestor_cgroup_id(agent_level), which must be
 *     a key of the `agents` map; anything else is denied (return 0: EPERM).
 *     TCP: the original destination and the caller's identity are saved in the
 *     socket's local storage, then the destination is rewritten to the proxy:
 *       v4 (connect4)            -> 127.0.0.1:proxy_port
 *       v4-mapped (connect6)     -> ::ffff:127.0.0.1:proxy_port (family kept)
 *       native v6 (connect6)     -> [::1]:proxy_port
 *     TCP to port 53 goes the same way to the resolver's TCP port instead.
 *     With refuse_ipv6 set, TCP to native IPv6 (other than ::1) is denied, so
 *     clients fall back to IPv4 at once.
 *     A loopback destination (127/8, ::1) is steered to the proxy like the
 *     rest: the kernel connects nothing directly, so the proxy's policy
 *     decides (a passthrough rule naming the address and port splices it)
 *     and the audit log records it either way.
 *     UDP: port 53 (any address) goes to the resolver, everything else is
 *     denied, so QUIC falls back to TCP.
 *     A destination that already is the proxy or the resolver is left alone
 *     (idempotent when two generations of this program run in sequence).
 *
 *   cgroup/sendmsg4, cgroup/sendmsg6
 *     Unconnected UDP (sendto/sendmsg with an address): port 53 goes to the
 *     resolver, with the original destination saved; everything else denied.
 *
 *   cgroup/recvmsg4, cgroup/recvmsg6
 *     A datagram from the resolver is reported as coming from the address the
 *     agent last sent its query to (the socket's sk_meta), so resolvers that
 *     check the reply's source accept it. recvmsg cannot deny.
 *
 *   cgroup/getpeername4, cgroup/getpeername6
 *     A steered socket reports its original peer, not the proxy or resolver.
 *
 *   cgroup/bind4, cgroup/bind6
 *     Agents cannot bind the proxy's or the resolver's port (any address).
 *
 *   cgroup/sock_create
 *     Only TCP and UDP sockets over AF_INET/AF_INET6: raw, ICMP (ping),
 *     SCTP, MPTCP, UDP-Lite and anything else is denied. (Other families,
 *     AF_PACKET among them, never reach this hook: agents run without
 *     CAP_NET_RAW, so the kernel refuses those itself.)
 *
 *   cgroup_skb/egress
 *     Backstop: any agent packet whose device is not loopback (ifindex 1 in
 *     every network namespace) is dropped. It also tells the resolver who
 *     sent a UDP query: for a UDP datagram to the resolver's port it copies
 *     the sending socket's sk_meta into udp_by_tuple, keyed by the datagram's
 *     {source, destination}, before the datagram reaches the resolver's
 *     socket. (The source port of an unconnected socket is only chosen after
 *     the connect/sendmsg hooks ran, so the packet is the first place the
 *     full tuple is known.)
 *
 *   sockops (BPF_SOCK_OPS_TCP_CONNECT_CB only)
 *     Runs after the source port is chosen and before the SYN is sent. Copies
 *     the socket's sk_meta into orig_by_tuple, keyed by the 4-tuple the proxy
 *     (or the resolver's TCP listener) sees after accept(). Never uses
 *     bpf_get_current_*: identity was captured in connect, where "current" is
 *     the agent.
 *
 * Every hook used here exists from kernel 5.8 on (getpeername4/6 are the
 * newest, 5.8); the loader attaches all of them or fails.
 *
 * No CO-RE: only UAPI context structs are used.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define LOOPBACK_IFINDEX 1
#define DNS_PORT 53

#define LOOPBACK4 0x7f000001 /* 127.0.0.1, host order */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set at load time (cilium/ebpf spec.Variables). */
volatile const __u16 proxy_port = 0; /* host order; 0 = not configured: deny */
volatile const __u16 dns_port = 0;   /* resolver port (UDP and TCP); 0 = no resolver: DNS denied */
volatile const __u32 agent_level = 0; /* cgroup level of agents/<name> */
volatile const __u32 refuse_ipv6 = 0; /* 1: native IPv6 TCP (not loopback, not DNS) is denied */

struct agent_info {
	__u32 flags; /* reserved */
	__u32 pad;
};

/* Field order avoids holes: 64 bytes, every byte written in connect. */
struct sk_meta {
	__u8 orig_addr[16]; /* v4 stored v4-mapped (::ffff:a.b.c.d) */
	__u16 orig_port;    /* host order */
	__u16 family;       /* address family of the agent's socket */
	__u32 pid;          /* tgid */
	__u64 cgroup_id;    /* the agent's identity (ancestor at agent_level) */
	__u32 uid;
	__u32 gid;
	char comm[16];
	__u64 ktime_boot; /* bpf_ktime_get_boot_ns() at connect; in udp_by_tuple at the datagram */
};

/* 36 bytes, no padding: every byte is part of the hash. */
struct tuple_key {
	__u8 client_addr[16]; /* agent end; v4 as v4-mapped */
	__u8 proxy_addr[16];  /* proxy (or resolver) end; v4 as v4-mapped */
	__u16 client_port;    /* host order */
	__u16 proxy_port;     /* host order */
};

/* What a denying hook reports to the daemon (which audits it). 64 bytes. */
struct denial {
	__u64 cgroup_id;    /* the agent's id, or the caller's own cgroup if it is none */
	__u8 addr[16];      /* destination (connect, sendmsg) or address (bind); v4 mapped */
	__u32 pid;
	__u32 uid;
	__u16 port;         /* host order */
	__u16 family;       /* socket family */
	__u16 hook;         /* HOOK_* */
	__u16 protocol;     /* IPPROTO_*, for sock_create the protocol asked for */
	__u32 sock_type;    /* sock_create only */
	char comm[16];
};

enum {
	HOOK_CONNECT4 = 1,
	HOOK_CONNECT6,
	HOOK_SENDMSG4,
	HOOK_SENDMSG6,
	HOOK_BIND4,
	HOOK_BIND6,
	HOOK_SOCK_CREATE,
};

/* Denials, for the audit log. Full: events are dropped, never the verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} denials SEC(".maps");

/* Names the ring's record type in BTF (bpf2go -type denial); never read. */
struct denial *const denial_type __attribute__((unused)) = 0;


struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* cgroup id of agents/<name> */
	__type(value, struct agent_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} agents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sk_meta_store SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tuple_key);
	__type(value, struct sk_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} orig_by_tuple SEC(".maps");

/* UDP queries to the resolver: who sent them (written per datagram). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tuple_key);
	__type(value, struct sk_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} udp_by_tuple SEC(".maps");

#define DENY 0
#define ALLOW 1

/*
 * One context field, accessed exactly as written: a single access of the
 * field's own size at a constant offset from the ctx pointer. The verifier
 * rewrites ctx accesses by offset and size, so clang must not merge two
 * fields into one wider access (e.g. user_ip6[0..1] into an 8-byte store,
 * which only kernels >= 5.3 accept) or address a field through a computed
 * pointer ("dereference of modified ctx ptr").
 */
#define CTX_LOAD(field) (*(volatile typeof(field) *)&(field))
#define CTX_STORE(field, val) (*(volatile typeof(field) *)&(field) = (val))

/* Deepest cgroup level searched for an agent bound to an existing cgroup. */
#define MAX_BOUND_LEVEL 16

/*
 * Returns the agent's cgroup id, or 0 when the caller is no registered agent.
 * An agent under agents/ is the ancestor at agent_level. An agent bound to an
 * existing cgroup (a systemd unit's, where the programs are attached too) sits
 * elsewhere in the tree: the outermost registered ancestor is the agent. Only
 * the daemon registers ids, and it never registers an ancestor of agents/.
 */
static __always_inline __u64 agent_identity(void)
{
	__u64 id = bpf_get_current_ancestor_cgroup_id(agent_level);
	int level;

	if (id != 0 && bpf_map_lookup_elem(&agents, &id))
		return id;
#pragma unroll
	for (level = 1; level <= MAX_BOUND_LEVEL; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (id == 0)
			return 0; /* below the caller's own level */
		if (bpf_map_lookup_elem(&agents, &id))
			return id;
	}
	return 0;
}

/* Reserves a denial with the caller's identity filled in; NULL if the ring is full. */
static __always_inline struct denial *new_denial(__u16 hook)
{
	struct denial *d = bpf_ringbuf_reserve(&denials, sizeof(*d), 0);
	__u64 id;

	if (!d)
		return 0;
	__builtin_memset(d, 0, sizeof(*d));
	id = agent_identity();
	d->cgroup_id = id ? id : bpf_get_current_cgroup_id();
	d->pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	d->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(d->comm, sizeof(d->comm));
	d->hook = hook;
	return d;
}

/* Reports a denial of a sock_addr hook; v6 is a compile-time constant per program. */
static __always_inline int deny_addr(struct bpf_sock_addr *ctx, __u16 hook, int v6)
{
	struct denial *d = new_denial(hook);
	__u32 *a;

	if (!d)
		return DENY;
	a = (__u32 *)d->addr;
	if (v6) {
		a[0] = CTX_LOAD(ctx->user_ip6[0]);
		a[1] = CTX_LOAD(ctx->user_ip6[1]);
		a[2] = CTX_LOAD(ctx->user_ip6[2]);
		a[3] = CTX_LOAD(ctx->user_ip6[3]);
	} else {
		a[2] = bpf_htonl(0xffff);
		a[3] = ctx->user_ip4;
	}
	d->port = bpf_ntohs((__u16)ctx->user_port);
	d->family = (__u16)ctx->user_family;
	d->protocol = (__u16)ctx->protocol;
	bpf_ringbuf_submit(d, 0);
	return DENY;
}

/*
 * Creates (or reuses) the socket's sk_meta and fills every field. addr is the
 * original destination as four network-order words (v4 already v4-mapped).
 */
static __always_inline int save_meta(struct bpf_sock_addr *ctx, __u64 cgroup_id,
				     __u32 a0, __u32 a1, __u32 a2, __u32 a3)
{
	struct sk_meta *m;
	__u32 *addr;
	__u64 v;

	m = bpf_sk_storage_get(&sk_meta_store, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!m)
		return -1;

	addr = (__u32 *)m->orig_addr;
	addr[0] = a0;
	addr[1] = a1;
	addr[2] = a2;
	addr[3] = a3;
	m->orig_port = bpf_ntohs((__u16)ctx->user_port);
	m->family = (__u16)ctx->user_family;
	m->cgroup_id = cgroup_id;
	v = bpf_get_current_pid_tgid();
	m->pid = (__u32)(v >> 32);
	v = bpf_get_current_uid_gid();
	m->uid = (__u32)v;
	m->gid = (__u32)(v >> 32);
	if (bpf_get_current_comm(m->comm, sizeof(m->comm)) != 0)
		__builtin_memset(m->comm, 0, sizeof(m->comm));
	m->ktime_boot = bpf_ktime_get_boot_ns();
	return 0;
}

static __always_inline __u32 port_be(__u16 port)
{
	return bpf_htons(port);
}

static __always_inline int is_mapped(__u32 a0, __u32 a1, __u32 a2)
{
	return a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff);
}

/* ::1, or ::ffff:127.0.0.1 when mapped */
static __always_inline int is_local_service6(__u32 a0, __u32 a1, __u32 a2, __u32 a3)
{
	if (is_mapped(a0, a1, a2))
		return a3 == bpf_htonl(LOOPBACK4);
	return a0 == 0 && a1 == 0 && a2 == 0 && a3 == bpf_htonl(1);
}

/*
 * UDP straight to the resolver's own address. That is also what sendmsg4
 * sees when a dual-stack socket connected (and steered) to a v4-mapped
 * resolver sends: the kernel passes the connected address on. The socket's
 * record of where the agent meant to go is kept; a socket without one gets
 * one, so the resolver still learns who is asking.
 */
static __always_inline int to_resolver(struct bpf_sock_addr *ctx, __u64 id,
				       __u32 a0, __u32 a1, __u32 a2, __u32 a3)
{
	if (bpf_sk_storage_get(&sk_meta_store, ctx->sk, 0, 0))
		return ALLOW;
	return save_meta(ctx, id, a0, a1, a2, a3) == 0 ? ALLOW : DENY;
}

/*
 * connect4 and sendmsg4: where an IPv4 destination goes. Returns DENY or
 * ALLOW; on ALLOW the context may have been rewritten.
 */
static __always_inline int steer4(struct bpf_sock_addr *ctx, int udp)
{
	__u64 id = agent_identity();
	__u32 ip, port, to;

	if (id == 0 || proxy_port == 0 || ctx->user_family != AF_INET)
		return DENY;
	ip = ctx->user_ip4;
	port = ctx->user_port;

	if (udp) {
		if (dns_port == 0)
			return DENY;
		if (ip == bpf_htonl(LOOPBACK4) && port == port_be(dns_port))
			return to_resolver(ctx, id, 0, 0, bpf_htonl(0xffff), ip);
		if (port != port_be(DNS_PORT))
			return DENY; /* only DNS leaves an agent over UDP */
		to = dns_port;
	} else {
		if (ip == bpf_htonl(LOOPBACK4) &&
		    (port == port_be(proxy_port) || (dns_port && port == port_be(dns_port))))
			return ALLOW;
		to = (port == port_be(DNS_PORT) && dns_port) ? dns_port : proxy_port;
	}

	if (save_meta(ctx, id, 0, 0, bpf_htonl(0xffff), ip) != 0)
		return DENY; /* never redirect without metadata */

	CTX_STORE(ctx->user_ip4, bpf_htonl(LOOPBACK4));
	CTX_STORE(ctx->user_port, port_be(to)); /* 4-byte store, network order */
	return ALLOW;
}

/* connect6 and sendmsg6: the same for an IPv6 (or v4-mapped) destination. */
static __always_inline int steer6(struct bpf_sock_addr *ctx, int udp)
{
	__u64 id = agent_identity();
	__u32 a0, a1, a2, a3, port, to;
	int mapped, local;

	if (id == 0 || proxy_port == 0 || ctx->user_family != AF_INET6)
		return DENY;

	/* user_ip6 is read and written as 4-byte words only. */
	a0 = CTX_LOAD(ctx->user_ip6[0]);
	a1 = CTX_LOAD(ctx->user_ip6[1]);
	a2 = CTX_LOAD(ctx->user_ip6[2]);
	a3 = CTX_LOAD(ctx->user_ip6[3]);
	port = ctx->user_port;
	mapped = is_mapped(a0, a1, a2);
	local = is_local_service6(a0, a1, a2, a3);

	if (udp) {
		if (dns_port == 0)
			return DENY;
		if (local && port == port_be(dns_port))
			return to_resolver(ctx, id, a0, a1, a2, a3);
		if (port != port_be(DNS_PORT))
			return DENY;
		to = dns_port;
	} else {
		if (local && (port == port_be(proxy_port) || (dns_port && port == port_be(dns_port))))
			return ALLOW;
		if (refuse_ipv6 && !mapped && !local && port != port_be(DNS_PORT))
			return DENY; /* no IPv6 upstream: fail fast, clients fall back to IPv4 */
		to = (port == port_be(DNS_PORT) && dns_port) ? dns_port : proxy_port;
	}

	if (save_meta(ctx, id, a0, a1, a2, a3) != 0)
		return DENY;

	if (mapped) {
		/* Keep the ::ffff: prefix: the socket may be dual-stack only. */
		CTX_STORE(ctx->user_ip6[3], bpf_htonl(LOOPBACK4));
	} else {
		CTX_STORE(ctx->user_ip6[0], 0);
		CTX_STORE(ctx->user_ip6[1], 0);
		CTX_STORE(ctx->user_ip6[2], 0);
		CTX_STORE(ctx->user_ip6[3], bpf_htonl(1));
	}
	CTX_STORE(ctx->user_port, port_be(to)); /* 4-byte store, network order */
	return ALLOW;
}

/* connect4/6: TCP and UDP only (the family's socket types sock_create lets through). */
static __always_inline int connect_hook(struct bpf_sock_addr *ctx, int v6)
{
	__u32 proto = ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return DENY;
	return v6 ? steer6(ctx, proto == IPPROTO_UDP) : steer4(ctx, proto == IPPROTO_UDP);
}

SEC("cgroup/connect4")
int steer_connect4(struct bpf_sock_addr *ctx)
{
	return connect_hook(ctx, 0) == ALLOW ? ALLOW : deny_addr(ctx, HOOK_CONNECT4, 0);
}

SEC("cgroup/connect6")
int steer_connect6(struct bpf_sock_addr *ctx)
{
	return connect_hook(ctx, 1) == ALLOW ? ALLOW : deny_addr(ctx, HOOK_CONNECT6, 1);
}

SEC("cgroup/sendmsg4")
int steer_sendmsg4(struct bpf_sock_addr *ctx)
{
	return steer4(ctx, 1) == ALLOW ? ALLOW : deny_addr(ctx, HOOK_SENDMSG4, 0);
}

SEC("cgroup/sendmsg6")
int steer_sendmsg6(struct bpf_sock_addr *ctx)
{
	return steer6(ctx, 1) == ALLOW ? ALLOW : deny_addr(ctx, HOOK_SENDMSG6, 1);
}

/*
 * recvmsg4/6 and getpeername4/6: if the address is the proxy's or the
 * resolver's and the socket was steered, report the original destination
 * instead. Always ALLOW (recvmsg cannot deny; getpeername has nothing to).
 */
static __always_inline int is_ours(__u32 port)
{
	return port == port_be(proxy_port) || (dns_port && port == port_be(dns_port));
}

/* restore4 shows an IPv4 agent socket its original peer instead of wirken's
 * listener: for replies from the resolver (recvmsg4, dns_only) or for the peer
 * of a steered connection (getpeername4). */
static __always_inline int restore4(struct bpf_sock_addr *ctx, int dns_only)
{
	struct sk_meta *m;
	__u32 *o;

	if (ctx->user_ip4 != bpf_htonl(LOOPBACK4))
		return ALLOW;
	if (dns_only ? !(dns_port && ctx->user_port == port_be(dns_port)) : !is_ours(ctx->user_port))
		return ALLOW;
	m = bpf_sk_storage_get(&sk_meta_store, ctx->sk, 0, 0);
	if (!m)
		return ALLOW;
	o = (__u32 *)m->orig_addr;
	if (!is_mapped(o[0], o[1], o[2]))
		return ALLOW;
	CTX_STORE(ctx->user_ip4, o[3]);
	CTX_STORE(ctx->user_port, port_be(m->orig_port));
	return ALLOW;
}

SEC("cgroup/recvmsg4")
int steer_recvmsg4(struct bpf_sock_addr *ctx)
{
	return restore4(ctx, 1);
}

static __always_inline int restore6(struct bpf_sock_addr *ctx, int dns_only)
{
	struct sk_meta *m;
	__u32 a0, a1, a2, a3, port;
	__u32 *o;

	a0 = CTX_LOAD(ctx->user_ip6[0]);
	a1 = CTX_LOAD(ctx->user_ip6[1]);
	a2 = CTX_LOAD(ctx->user_ip6[2]);
	a3 = CTX_LOAD(ctx->user_ip6[3]);
	port = ctx->user_port;
	if (!is_local_service6(a0, a1, a2, a3))
		return ALLOW;
	if (dns_only ? !(dns_port && port == port_be(dns_port)) : !is_ours(port))
		return ALLOW;
	m = bpf_sk_storage_get(&sk_meta_store, ctx->sk, 0, 0);
	if (!m)
		return ALLOW;
	o = (__u32 *)m->orig_addr;
	CTX_STORE(ctx->user_ip6[0], o[0]);
	CTX_STORE(ctx->user_ip6[1], o[1]);
	CTX_STORE(ctx->user_ip6[2], o[2]);
	CTX_STORE(ctx->user_ip6[3], o[3]);
	CTX_STORE(ctx->user_port, port_be(m->orig_port));
	return ALLOW;
}

SEC("cgroup/recvmsg6")
int steer_recvmsg6(struct bpf_sock_addr *ctx)
{
	return restore6(ctx, 1);
}

SEC("cgroup/getpeername4")
int steer_getpeername4(struct bpf_sock_addr *ctx)
{
	return restore4(ctx, 0);
}

SEC("cgroup/getpeername6")
int steer_getpeername6(struct bpf_sock_addr *ctx)
{
	return restore6(ctx, 0);
}

/* Agents may not take the proxy's or the resolver's port, on any address. */
SEC("cgroup/bind4")
int steer_bind4(struct bpf_sock_addr *ctx)
{
	return is_ours(ctx->user_port) ? deny_addr(ctx, HOOK_BIND4, 0) : ALLOW;
}

SEC("cgroup/bind6")
int steer_bind6(struct bpf_sock_addr *ctx)
{
	return is_ours(ctx->user_port) ? deny_addr(ctx, HOOK_BIND6, 1) : ALLOW;
}

SEC("cgroup/sock_create")
int steer_sock_create(struct bpf_sock *sk)
{
	__u32 family = sk->family, type = sk->type, proto = sk->protocol;

	struct denial *d;

	if ((family == AF_INET || family == AF_INET6) &&
	    ((type == SOCK_STREAM && proto == IPPROTO_TCP) || (type == SOCK_DGRAM && proto == IPPROTO_UDP)))
		return ALLOW;
	d = new_denial(HOOK_SOCK_CREATE);
	if (d) {
		d->family = (__u16)family;
		d->sock_type = type;
		d->protocol = (__u16)proto;
		bpf_ringbuf_submit(d, 0);
	}
	return DENY;
}

/* Records who sent a UDP datagram to the resolver (see the top comment). */
static __always_inline void record_udp_query(struct __sk_buff *skb)
{
	struct tuple_key k = {};
	struct bpf_sock *sk;
	struct sk_meta *m, v;
	__u32 *c = (__u32 *)k.client_addr, *p = (__u32 *)k.proxy_addr;
	__u16 ports[2];
	__u8 proto;
	__u32 off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 vihl;

		if (bpf_skb_load_bytes(skb, 0, &vihl, 1) || bpf_skb_load_bytes(skb, 9, &proto, 1))
			return;
		if (proto != IPPROTO_UDP)
			return;
		off = (vihl & 0xf) * 4;
		c[2] = bpf_htonl(0xffff);
		p[2] = bpf_htonl(0xffff);
		if (bpf_skb_load_bytes(skb, 12, &c[3], 4) || bpf_skb_load_bytes(skb, 16, &p[3], 4))
			return;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 6, &proto, 1) || proto != IPPROTO_UDP)
			return; /* extension headers: no record, the resolver refuses */
		off = 40;
		if (bpf_skb_load_bytes(skb, 8, k.client_addr, 16) ||
		    bpf_skb_load_bytes(skb, 24, k.proxy_addr, 16))
			return;
	} else {
		return;
	}
	if (bpf_skb_load_bytes(skb, off, ports, 4))
		return;
	if (bpf_ntohs(ports[1]) != dns_port)
		return;
	sk = skb->sk;
	if (!sk)
		return;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return;
	m = bpf_sk_storage_get(&sk_meta_store, sk, 0, 0);
	if (!m)
		return;
	k.client_port = bpf_ntohs(ports[0]);
	k.proxy_port = dns_port;
	/* The record's time is this datagram's: the resolver refuses old ones. */
	v = *m;
	v.ktime_boot = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&udp_by_tuple, &k, &v, BPF_ANY);
}

SEC("cgroup_skb/egress")
int steer_egress(struct __sk_buff *skb)
{
	if (skb->ifindex != LOOPBACK_IFINDEX)
		return DENY; /* backstop: an agent's packets never leave loopback */
	if (dns_port)
		record_udp_query(skb);
	return ALLOW;
}

/*
 * sockops byte order, normalised here and nowhere else. local_port is host
 * order. remote_port is the network-order port; kernels on little-endian hosts
 * place it in the upper 16 bits of the u32 (checked on 6.18 by the privileged
 * tests), some distro kernels in the lower 16. A connected port is never 0, so
 * "anything above 0xffff" tells the layouts apart.
 */
static __always_inline __u16 skops_remote_port(const struct bpf_sock_ops *skops)
{
	__u32 p = CTX_LOAD(skops->remote_port);

	if (p > 0xffff)
		p >>= 16;
	return bpf_ntohs((__u16)p);
}

static __always_inline __u16 skops_local_port(const struct bpf_sock_ops *skops)
{
	return (__u16)CTX_LOAD(skops->local_port);
}

/*
 * The tuple of a sockops callback's socket, client (local) end first. Returns
 * 0 if the family is neither v4 nor v6.
 */
static __always_inline int skops_tuple(struct bpf_sock_ops *skops, struct tuple_key *k)
{
	__u32 *c = (__u32 *)k->client_addr, *p = (__u32 *)k->proxy_addr;
	__u32 family, local4, remote4;

	family = CTX_LOAD(skops->family);
	/*
	 * The v4 fields are loaded up front, outside the branches: otherwise
	 * clang sinks the v4 and v6 loads of word 3 into one load through a
	 * computed ctx pointer, which the verifier rejects.
	 */
	local4 = CTX_LOAD(skops->local_ip4);
	remote4 = CTX_LOAD(skops->remote_ip4);
	if (family == AF_INET) {
		c[2] = bpf_htonl(0xffff);
		c[3] = local4;
		p[2] = bpf_htonl(0xffff);
		p[3] = remote4;
	} else if (family == AF_INET6) {
		c[0] = CTX_LOAD(skops->local_ip6[0]);
		c[1] = CTX_LOAD(skops->local_ip6[1]);
		c[2] = CTX_LOAD(skops->local_ip6[2]);
		c[3] = CTX_LOAD(skops->local_ip6[3]);
		p[0] = CTX_LOAD(skops->remote_ip6[0]);
		p[1] = CTX_LOAD(skops->remote_ip6[1]);
		p[2] = CTX_LOAD(skops->remote_ip6[2]);
		p[3] = CTX_LOAD(skops->remote_ip6[3]);
	} else {
		return 0;
	}
	k->client_port = skops_local_port(skops);
	k->proxy_port = skops_remote_port(skops);
	return 1;
}

#define TCP_CLOSE_STATE 7 /* TCP_CLOSE in include/net/tcp_states.h */

/*
 * A tuple entry lives exactly as long as its client socket: written at
 * TCP_CONNECT_CB (and the socket asks for state callbacks), deleted when the
 * socket reaches TCP_CLOSE (a refused or closed connection), and deleted at
 * TCP_CONNECT_CB of a socket without metadata (a direct connect to the
 * proxy's port), so no later connection from the same tuple finds an older
 * socket's record. The proxy also refuses entries older than a bound.
 */
SEC("sockops")
int steer_sockops(struct bpf_sock_ops *skops)
{
	struct tuple_key k = {};
	struct bpf_sock *sk;
	struct sk_meta *m;
	__u32 op = skops->op;

	if (op == BPF_SOCK_OPS_STATE_CB) {
		if (CTX_LOAD(skops->args[1]) == TCP_CLOSE_STATE && skops_tuple(skops, &k))
			bpf_map_delete_elem(&orig_by_tuple, &k);
		return 1;
	}
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	if (!skops_tuple(skops, &k))
		return 1;
	sk = skops->sk;
	m = sk ? bpf_sk_storage_get(&sk_meta_store, sk, 0, 0) : 0;
	if (!m) {
		/* Not a steered socket: no older record may answer for it. */
		bpf_map_delete_elem(&orig_by_tuple, &k);
		return 1;
	}
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);

	/* A failed update leaves no entry: the proxy then resets (fail closed). */
	if (bpf_map_update_elem(&orig_by_tuple, &k, m, BPF_ANY) != 0)
		bpf_map_delete_elem(&orig_by_tuple, &k);
	return 1;
}
