// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * wirken steering programs, attached (as pinned bpf_links) to the agents/
 * cgroup. They tie every TCP connect of an agent process to its identity and
 * steer it into the local proxy:
 *
 *   cgroup/connect4, cgroup/connect6
 *     identity = bpf_get_current_ancestor_cgroup_id(agent_level), which must be
 *     a key of the `agents` map; anything else is denied (return 0: EPERM).
 *     Only TCP is steered. UDP (and every other protocol) is denied for now:
 *     DNS steering comes later, so agents cannot resolve names over UDP yet.
 *     The original destination and the caller's identity are saved in the
 *     socket's local storage, then the destination is rewritten to the proxy:
 *       v4 (connect4)            -> 127.0.0.1:proxy_port
 *       v4-mapped (connect6)     -> ::ffff:127.0.0.1:proxy_port (family kept)
 *       native v6 (connect6)     -> [::1]:proxy_port
 *     A destination that already is the proxy is left alone (idempotent when
 *     two generations of this program run in sequence during an upgrade).
 *
 *   sockops (BPF_SOCK_OPS_TCP_CONNECT_CB only)
 *     Runs after the source port is chosen and before the SYN is sent. Copies
 *     the socket's sk_meta into orig_by_tuple, keyed by the 4-tuple the proxy
 *     sees after accept(). Never uses bpf_get_current_*: identity was captured
 *     in connect, where "current" is the agent.
 *
 * No CO-RE: only UAPI context structs are used.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

#define LOOPBACK4 0x7f000001 /* 127.0.0.1, host order */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set at load time (cilium/ebpf spec.Variables). */
volatile const __u16 proxy_port = 0; /* host order; 0 = not configured: deny */
volatile const __u32 agent_level = 0; /* cgroup level of agents/<name> */

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
	__u64 ktime_boot; /* bpf_ktime_get_boot_ns() at connect */
};

/* 36 bytes, no padding: every byte is part of the hash. */
struct tuple_key {
	__u8 client_addr[16]; /* agent end; v4 as v4-mapped */
	__u8 proxy_addr[16];  /* proxy end; v4 as v4-mapped */
	__u16 client_port;    /* host order */
	__u16 proxy_port;     /* host order */
};

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

/* Returns the agent's cgroup id, or 0 when the caller is no registered agent. */
static __always_inline __u64 agent_identity(void)
{
	__u64 id = bpf_get_current_ancestor_cgroup_id(agent_level);

	if (id == 0 || !bpf_map_lookup_elem(&agents, &id))
		return 0;
	return id;
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

static __always_inline __u32 proxy_port_be(void)
{
	return bpf_htons(proxy_port);
}

SEC("cgroup/connect4")
int steer_connect4(struct bpf_sock_addr *ctx)
{
	__u64 id = agent_identity();
	__u32 ip;

	if (id == 0 || proxy_port == 0)
		return DENY;
	if (ctx->protocol != IPPROTO_TCP || ctx->user_family != AF_INET)
		return DENY;

	ip = ctx->user_ip4;
	if (ip == bpf_htonl(LOOPBACK4) && ctx->user_port == proxy_port_be())
		return ALLOW;

	if (save_meta(ctx, id, 0, 0, bpf_htonl(0xffff), ip) != 0)
		return DENY; /* never redirect without metadata */

	CTX_STORE(ctx->user_ip4, bpf_htonl(LOOPBACK4));
	CTX_STORE(ctx->user_port, proxy_port_be()); /* 4-byte store, network order */
	return ALLOW;
}

SEC("cgroup/connect6")
int steer_connect6(struct bpf_sock_addr *ctx)
{
	__u64 id = agent_identity();
	__u32 a0, a1, a2, a3;
	int mapped;

	if (id == 0 || proxy_port == 0)
		return DENY;
	if (ctx->protocol != IPPROTO_TCP || ctx->user_family != AF_INET6)
		return DENY;

	/* user_ip6 is read and written as 4-byte words only. */
	a0 = CTX_LOAD(ctx->user_ip6[0]);
	a1 = CTX_LOAD(ctx->user_ip6[1]);
	a2 = CTX_LOAD(ctx->user_ip6[2]);
	a3 = CTX_LOAD(ctx->user_ip6[3]);
	mapped = a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff);

	if (ctx->user_port == proxy_port_be()) {
		if (mapped && a3 == bpf_htonl(LOOPBACK4))
			return ALLOW;
		if (!mapped && a0 == 0 && a1 == 0 && a2 == 0 && a3 == bpf_htonl(1))
			return ALLOW;
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
	CTX_STORE(ctx->user_port, proxy_port_be()); /* 4-byte store, network order */
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

SEC("sockops")
int steer_sockops(struct bpf_sock_ops *skops)
{
	struct tuple_key k = {};
	struct bpf_sock *sk;
	struct sk_meta *m;
	__u32 *c, *p;
	__u32 family, local4, remote4;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	m = bpf_sk_storage_get(&sk_meta_store, sk, 0, 0);
	if (!m)
		return 1; /* not a steered socket */

	c = (__u32 *)k.client_addr;
	p = (__u32 *)k.proxy_addr;
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
		return 1;
	}
	k.client_port = skops_local_port(skops);
	k.proxy_port = skops_remote_port(skops);

	/* A failed update leaves no entry: the proxy then resets (fail closed). */
	bpf_map_update_elem(&orig_by_tuple, &k, m, BPF_ANY);
	return 1;
}
