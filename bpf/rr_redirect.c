// SPDX-License-Identifier: GPL-2.0
/*
 * rr_redirect: the XDP program xdpd attaches to every netdev it owns queues on.
 *
 * For each packet it decides one thing: does the packet go to user space
 * (the AF_XDP socket of the rx queue it arrived on) or does it stay with the
 * kernel.  The kernel only delivers a redirected frame to a socket bound to
 * the same (netdev, queue) it arrived on, so the rx queue index picks the
 * sockets a packet may go to; with fanout, the program picks one of them.
 *
 *  - A queue xdpd does not own is passed, so management traffic (ssh,
 *    ARP, routing daemons) that the NIC steers to other queues keeps working.
 *  - A packet on an owned queue that matches one of the netdev's pass
 *    rules (pass_to_kernel in the config: keep ARP and ssh with the host)
 *    is passed and counted as pass_rule.  Only then (and for the flow
 *    hash below, one parse for both) is the packet parsed: Ethernet, up
 *    to two VLAN tags (802.1Q or 802.1ad), IPv4 (options skipped by IHL)
 *    or the fixed IPv6 header (extension headers are not walked: behind
 *    one, ip_proto is the extension's and there are no ports), and the
 *    TCP/UDP ports of an unfragmented or first-fragment packet.  A field the packet is too short to carry is not known, and a
 *    rule that needs it does not match.  With no rules and no flow hash
 *    (the default) none of this runs.
 *  - An owned queue with one socket (fanout 1, the default) is redirected
 *    to xsks[q].  With fanout N > 1 (N sockets bound to the same queue,
 *    member m at xsks[q + m * XDPD_MAX_QUEUES]) a slot 0..N-1 is picked:
 *    by a hash of the flow (the default: each flow stays on one socket, in
 *    order) or by a per-CPU round-robin counter of the queue.  The hash
 *    covers the IPv4/IPv6 addresses, the IP protocol and the TCP/UDP ports;
 *    for an IP fragment (IPv4 MF or offset set, IPv6 fragment header right
 *    behind the fixed one) only addresses and protocol, since later
 *    fragments carry no ports and every fragment of a datagram must meet in
 *    one socket to be reassembled; for anything else the MAC addresses and
 *    the ethertype after the VLAN tags.  A member slot without a socket
 *    (that member is being restarted or was given up) sends the packet to
 *    the owner, counted as redirected and fanout_to_owner.
 *  - An owned queue without a socket (with fanout: neither in the picked
 *    slot nor in the owner's; its worker is being restarted, or the
 *    supervisor is between tearing down and re-creating the socket) gets the
 *    queue's configured fallback: XDP_PASS (traffic falls back to the kernel
 *    stack) or XDP_DROP (nothing unexpected reaches the kernel).  The
 *    fallback is handed to bpf_redirect_map() in the flags' low bits, which
 *    the helper returns when the xsks entry is empty, so the decision costs
 *    one map lookup (two when a member's slot was empty first).
 *
 * One loaded instance serves one netdev: queue ids collide across netdevs,
 * and each netdev needs its own xsks map.  The supervisor writes queue_conf
 * and xsks; queue_stats is per CPU and summed by user space, so the fast
 * path never takes a lock or an atomic.  "redirected" counts this program's
 * verdict: a frame the socket then could not take (RX ring full, FILL ring
 * empty) shows up in the socket's XDP_STATISTICS, not here.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "rr_redirect.h"

/* q + member * XDPD_MAX_QUEUES -> AF_XDP socket bound to rx queue q of this
 * netdev; member 0, the owner, is at q */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XDPD_MAX_QUEUES * XDPD_MAX_FANOUT);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* rx queue index -> ownership and fallback, written by the supervisor */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDPD_MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct xdpd_queue_conf);
} queue_conf SEC(".maps");

/* rx queue index -> per-CPU verdict counters, summed by user space */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPD_MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct xdpd_queue_stats);
} queue_stats SEC(".maps");

/* rx queue index -> the next round-robin slot.  Per CPU: a queue's NAPI
 * runs on one CPU at a time, so each CPU's counter cycles through the slots
 * without an atomic, and a queue that moves CPU just starts elsewhere. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPD_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} rr_next SEC(".maps");

/* two sets of pass rules; prog_conf says which is active and how long */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * XDPD_MAX_PASS_RULES);
	__type(key, __u32);
	__type(value, struct xdpd_match);
} pass_rules SEC(".maps");

/* the netdev's settings that are not per queue (one entry) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpd_prog_conf);
} prog_conf SEC(".maps");

/* 802.1Q / 802.1ad tag, after the MAC addresses (not in the uapi headers) */
struct vlan_tag {
	__be16 tci;
	__be16 encap_proto;
};

/* what parsing learnt of a packet; "have" has the XDPD_MATCH_* bit of every
 * field that was there to read */
struct pkt_info {
	__u32 have;
	__be16 ethertype;
	__u16 vlan;
	__u8 ip_proto;
	__u8 frag;		/* an IP fragment: hash no ports */
	__be16 src_port;
	__be16 dst_port;
	__be32 src[4];
	__be32 dst[4];
	__u32 macs[3];		/* destination and source MAC, as read */
};

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/*
 * The L4 header sits at a variable offset (behind IPv4 options), and a
 * packet pointer plus a variable is refused by the verifier to a loader
 * without CAP_PERFMON ("pointer arithmetic with it prohibited for !root",
 * its Spectre v1 sanitation) - and the systemd unit grants none.  So the
 * headers before it are walked with constant-offset pointers while l3_off
 * counts the same bytes as a plain number, and the ports are copied out
 * with bpf_xdp_load_bytes() at l3_off + ihl.
 */
/* TCP/UDP ports: source and destination lead both headers; a packet cut
 * before them has none */
static __always_inline void read_ports(void *l4, void *data_end, struct pkt_info *pi)
{
	__be16 *ports = l4;

	if (pi->ip_proto != IPPROTO_TCP && pi->ip_proto != IPPROTO_UDP)
		return;
	if ((void *)(ports + 2) > data_end)
		return;
	pi->src_port = ports[0];
	pi->dst_port = ports[1];
	pi->have |= XDPD_MATCH_SRC_PORT | XDPD_MATCH_DST_PORT;
}

static __always_inline void pkt_parse(struct xdp_md *ctx, void *data, void *data_end,
				      struct pkt_info *pi)
{
	struct ethhdr *eth = data;
	struct vlan_tag *tag;
	__be16 ports[2];
	__be16 proto;
	__u32 l3_off = sizeof(*eth), l4_off;
	void *l3;
	int i;

	if ((void *)(eth + 1) > data_end)
		return;
	__builtin_memcpy(pi->macs, eth, sizeof(pi->macs));
	proto = eth->h_proto;
	l3 = eth + 1;
	if (!is_vlan(proto))
		pi->have |= XDPD_MATCH_UNTAGGED;
	for (i = 0; i < 2 && is_vlan(proto); i++) {
		tag = l3;
		if ((void *)(tag + 1) > data_end)
			return;
		if (i == 0) {
			pi->vlan = bpf_ntohs(tag->tci) & 0x0fff;
			pi->have |= XDPD_MATCH_VLAN;
		}
		proto = tag->encap_proto;
		l3 = tag + 1;
		l3_off += sizeof(*tag);
	}
	if (is_vlan(proto))		/* a third tag: not parsed further */
		return;
	pi->ethertype = proto;
	pi->have |= XDPD_MATCH_ETHERTYPE;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = l3;
		__u32 ihl;

		if ((void *)(iph + 1) > data_end)
			return;
		ihl = iph->ihl * 4;
		if (ihl < sizeof(*iph))
			return;
		pi->src[0] = iph->saddr;
		pi->dst[0] = iph->daddr;
		pi->ip_proto = iph->protocol;
		pi->have |= XDPD_MATCH_SRC | XDPD_MATCH_DST | XDPD_MATCH_IP_PROTO;
		/* MF or an offset: a fragment, the first one (offset 0) included */
		if (iph->frag_off & bpf_htons(0x3fff))
			pi->frag = 1;
		if (iph->frag_off & bpf_htons(0x1fff))	/* no L4 header here */
			return;
		l4_off = l3_off + ihl;
		if (ihl == sizeof(*iph)) {	/* no options: ports at a fixed offset */
			read_ports(iph + 1, data_end, pi);
			return;
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return;
		__builtin_memcpy(pi->src, &ip6->saddr, sizeof(pi->src));
		__builtin_memcpy(pi->dst, &ip6->daddr, sizeof(pi->dst));
		pi->ip_proto = ip6->nexthdr;
		pi->have |= XDPD_MATCH_SRC | XDPD_MATCH_DST | XDPD_MATCH_IP_PROTO;
		if (ip6->nexthdr == IPPROTO_FRAGMENT)
			pi->frag = 1;
		read_ports(ip6 + 1, data_end, pi);
		return;
	} else {
		return;
	}

	/* IPv4 with options: the ports' offset varies, and reading them in
	 * place would need the verifier's variable-offset packet access
	 * (CAP_PERFMON, which the unit does not grant): copied by the helper,
	 * which fails for a packet cut before them */
	if (pi->ip_proto != IPPROTO_TCP && pi->ip_proto != IPPROTO_UDP)
		return;
	if (bpf_xdp_load_bytes(ctx, l4_off, ports, sizeof(ports)))
		return;
	pi->src_port = ports[0];
	pi->dst_port = ports[1];
	pi->have |= XDPD_MATCH_SRC_PORT | XDPD_MATCH_DST_PORT;
}

/* parsing costs, so only packets that need it are parsed, and only once */
static __always_inline void parse(struct xdp_md *ctx, struct pkt_info *pi)
{
	__builtin_memset(pi, 0, sizeof(*pi));
	pkt_parse(ctx, (void *)(long)ctx->data, (void *)(long)ctx->data_end, pi);
}

static __always_inline int prefix_matches(const __be32 *addr, const __be32 *net,
					  const __be32 *mask)
{
	int i;

	for (i = 0; i < 4; i++)
		if ((addr[i] & mask[i]) != net[i])
			return 0;
	return 1;
}

static __always_inline int rule_matches(const struct xdpd_match *r,
					const struct pkt_info *pi)
{
	__u32 f = r->fields;

	/* an unused slot, or a rule on a field this packet does not have */
	if (!f || (f & ~pi->have))
		return 0;
	if ((f & XDPD_MATCH_ETHERTYPE) && r->ethertype != pi->ethertype)
		return 0;
	if ((f & XDPD_MATCH_VLAN) && r->vlan != pi->vlan)
		return 0;
	if ((f & XDPD_MATCH_IP_PROTO) && r->ip_proto != pi->ip_proto)
		return 0;
	if ((f & XDPD_MATCH_SRC_PORT) && r->src_port != pi->src_port)
		return 0;
	if ((f & XDPD_MATCH_DST_PORT) && r->dst_port != pi->dst_port)
		return 0;
	if ((f & XDPD_MATCH_SRC) && !prefix_matches(pi->src, r->src, r->src_mask))
		return 0;
	if ((f & XDPD_MATCH_DST) && !prefix_matches(pi->dst, r->dst, r->dst_mask))
		return 0;
	return 1;
}

/* does the parsed packet match one of the active pass rules? */
static __always_inline int pass_by_rule(const struct pkt_info *pi, __u32 first, __u32 nr)
{
	struct xdpd_match *r;
	__u32 i, key;

	for (i = 0; i < XDPD_MAX_PASS_RULES && i < nr; i++) {
		key = first + i;
		r = bpf_map_lookup_elem(&pass_rules, &key);
		if (!r)
			return 0;
		if (rule_matches(r, pi))
			return 1;
	}
	return 0;
}

/*
 * The flow hash: murmur3's 32-bit mixing of each word and its finalizer.
 * Not keyed: it only has to spread one queue's flows evenly, and whoever
 * can pick flows to crowd one socket could as well crowd the queue.
 */
static __always_inline __u32 rol32(__u32 w, int s)
{
	return (w << s) | (w >> (32 - s));
}

static __always_inline __u32 hash_word(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rol32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rol32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 flow_hash(const struct pkt_info *pi)
{
	__u32 h = 0, i;

	if (pi->have & XDPD_MATCH_SRC) {
		/* IPv4 or IPv6: an IPv4 address is word 0, the rest zero */
		h = hash_word(h, pi->src[0]);
		h = hash_word(h, pi->dst[0]);
		if (pi->ethertype == bpf_htons(ETH_P_IPV6)) {
			for (i = 1; i < 4; i++) {
				h = hash_word(h, pi->src[i]);
				h = hash_word(h, pi->dst[i]);
			}
		}
		h = hash_word(h, pi->ip_proto);
		/* later fragments have no ports: the first one must not use them */
		if (!pi->frag && (pi->have & XDPD_MATCH_SRC_PORT))
			h = hash_word(h, (__u32)pi->src_port << 16 | pi->dst_port);
	} else {
		/* not IP (or too short to tell): the MACs and the ethertype */
		for (i = 0; i < 3; i++)
			h = hash_word(h, pi->macs[i]);
		h = hash_word(h, pi->ethertype);
	}
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/*
 * "xdp.frags": the program is multi-buffer aware (libbpf loads it with
 * BPF_F_XDP_HAS_FRAGS), so drivers attach it at MTUs above a page (veth
 * refuses a program without it when its peer's MTU is over about 3.5 KB:
 * "Peer MTU is too large to set XDP").  Nothing here reads past the first
 * buffer through data/data_end; what may lie beyond it (ports after IPv4
 * options) is read with bpf_xdp_load_bytes(), which follows the fragments.
 * A multi-buffer packet redirected to a socket bound without XDP_USE_SG is
 * dropped by the kernel and counted in that socket's rx_dropped.
 */
SEC("xdp.frags")
int rr_redirect(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index;
	struct xdpd_queue_conf *conf;
	struct xdpd_queue_stats *stats;
	struct xdpd_prog_conf *pc;
	struct pkt_info pi;	/* zeroed by parse(), read only after it */
	__u32 zero = 0, first = 0, nr = 0, fanout, slot = 0, *next;
	long act, fallback;
	int hashed;

	/* beyond the maps: no counter to bump, leave it to the kernel */
	if (q >= XDPD_MAX_QUEUES)
		return XDP_PASS;

	/* array lookups below max_entries cannot miss; the verifier asks */
	conf = bpf_map_lookup_elem(&queue_conf, &q);
	stats = bpf_map_lookup_elem(&queue_stats, &q);
	if (!conf || !stats)
		return XDP_PASS;

	if (!conf->owned) {
		stats->passed++;
		return XDP_PASS;
	}

	/*
	 * Fanout: read once, so that whether the packet is parsed below and
	 * whether its hash is taken cannot disagree under a concurrent
	 * update.  A fanout beyond the map's slots is clamped, so a bad conf
	 * value cannot reach another queue's keys.
	 */
	fanout = *(volatile __u32 *)&conf->fanout;
	if (fanout > XDPD_MAX_FANOUT)
		fanout = XDPD_MAX_FANOUT;
	hashed = fanout > 1 &&
		 *(volatile __u32 *)&conf->spread != XDPD_SPREAD_ROUND_ROBIN;

	/*
	 * Read the active set once: the supervisor switches sets with one
	 * store of this entry and zeroes the unused slots of each set, so a
	 * packet that sees a stale count still only sees rules of one set.
	 */
	pc = bpf_map_lookup_elem(&prog_conf, &zero);
	if (pc) {
		first = *(volatile __u32 *)&pc->pass_rules_first;
		nr = *(volatile __u32 *)&pc->nr_pass_rules;
	}

	/* parsed at most once, and only for rules or a flow hash */
	if (nr || hashed) {
		parse(ctx, &pi);
		if (nr && pass_by_rule(&pi, first, nr)) {
			stats->pass_rule++;
			return XDP_PASS;
		}
		if (hashed)
			slot = ((__u64)flow_hash(&pi) * fanout) >> 32;
	}
	if (fanout > 1 && !hashed) {
		next = bpf_map_lookup_elem(&rr_next, &q);
		if (next) {
			/* past a fanout that shrank: start over */
			slot = *next < fanout ? *next : 0;
			*next = slot + 1 < fanout ? slot + 1 : 0;
		}
	}

	/*
	 * Every socket in the queue's slots is bound to this same (netdev,
	 * queue), as the kernel requires of a redirect target: it drops a
	 * frame redirected to a socket of another queue.
	 *
	 * On a miss the helper returns the flags' low bits; anything but
	 * XDP_DROP means XDP_PASS, so a bad conf value cannot become a
	 * BPF_F_* flag or another verdict.
	 */
	fallback = conf->fallback == XDP_DROP ? XDP_DROP : XDP_PASS;
	if (slot) {
		act = bpf_redirect_map(&xsks, q + slot * XDPD_MAX_QUEUES, fallback);
		if (act == XDP_REDIRECT) {
			stats->redirected++;
			return XDP_REDIRECT;
		}
	}
	/* the owner: fanout 1, slot 0, or a member's slot that was empty */
	act = bpf_redirect_map(&xsks, q, fallback);
	if (act == XDP_REDIRECT) {
		stats->redirected++;
		if (slot)
			stats->fanout_to_owner++;
		return XDP_REDIRECT;
	}

	stats->no_socket++;
	return act;
}

char _license[] SEC("license") = "GPL";
