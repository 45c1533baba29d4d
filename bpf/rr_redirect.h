/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Types shared by the XDP program (rr_redirect.c) and xdpd's user space.
 * xdpd/bpf.py mirrors these layouts with ctypes; tests/bpf checks that the
 * two agree (sizes and field offsets), so change both together.
 */
#ifndef XDPD_RR_REDIRECT_H
#define XDPD_RR_REDIRECT_H

#include <linux/types.h>

/* rx queues per netdev the program knows about; higher queues are passed. */
#define XDPD_MAX_QUEUES 256

/*
 * AF_XDP sockets bound to one (netdev, rx queue) ("fanout" in the config).
 * Socket m of queue q sits at xsks[q + m * XDPD_MAX_QUEUES]: m 0, the owner,
 * at the queue's own index, so fanout 1 keys xsks by queue alone.
 */
#define XDPD_MAX_FANOUT 16

/* xdpd_queue_conf.spread: how packets are spread over a queue's sockets */
#define XDPD_SPREAD_FLOW_HASH	0	/* a hash of the flow: each flow keeps its order */
#define XDPD_SPREAD_ROUND_ROBIN	1	/* per-CPU counter: even load, no flow order */

/*
 * Match rules per netdev for packets that stay with the kernel on owned
 * queues ("pass_to_kernel" in the config).  pass_rules holds two sets of
 * this many; prog_conf names the active one, so a reload writes the other
 * set and switches with one store.
 */
#define XDPD_MAX_PASS_RULES 16

/* xdpd_match.fields: which fields of a rule must match */
#define XDPD_MATCH_ETHERTYPE	(1U << 0)	/* after up to two VLAN tags */
#define XDPD_MATCH_VLAN		(1U << 1)	/* outer tag's VLAN id */
#define XDPD_MATCH_UNTAGGED	(1U << 2)	/* no 802.1Q/802.1ad tag */
#define XDPD_MATCH_IP_PROTO	(1U << 3)	/* IPv4 protocol / IPv6 next header */
#define XDPD_MATCH_SRC		(1U << 4)	/* src & src_mask == src */
#define XDPD_MATCH_DST		(1U << 5)
#define XDPD_MATCH_SRC_PORT	(1U << 6)	/* TCP or UDP */
#define XDPD_MATCH_DST_PORT	(1U << 7)

/*
 * pass_rules value.  A rule with fields == 0 never matches (unused slots
 * are zeroed).  Addresses, masks, ports and the ethertype are in network
 * byte order; an IPv4 address is word 0, words 1-3 zero in address and
 * mask.  A rule with SRC or DST also has ETHERTYPE set to the prefix's
 * family, so the program compares IPv4 words with IPv4 words.
 */
struct xdpd_match {
	__u32 fields;		/* XDPD_MATCH_* */
	__be16 ethertype;
	__u16 vlan;		/* VLAN id, 0-4095, host byte order */
	__u8 ip_proto;
	__u8 pad;
	__be16 src_port;
	__be16 dst_port;
	__u16 pad2;
	__be32 src[4];
	__be32 src_mask[4];
	__be32 dst[4];
	__be32 dst_mask[4];
};

/* prog_conf value (a single entry): per netdev, written by the supervisor */
struct xdpd_prog_conf {
	__u32 pass_rules_first;	/* 0 or XDPD_MAX_PASS_RULES: the active set */
	__u32 nr_pass_rules;	/* rules in it; 0: no parsing at all */
};

/* queue_conf value: written by the supervisor, read per packet. */
struct xdpd_queue_conf {
	__u32 owned;	/* 1: xdpd owns this queue, redirect to its socket */
	__u32 fallback;	/* verdict when owned but no socket: XDP_PASS or XDP_DROP */
	__u32 fanout;	/* sockets on the queue; 0 or 1: one (the owner) */
	__u32 spread;	/* XDPD_SPREAD_*, with fanout > 1 */
};

/* queue_stats value: per CPU, summed by user space. */
struct xdpd_queue_stats {
	__u64 redirected;	/* handed to the queue's AF_XDP socket */
	__u64 passed;		/* queue not owned: left to the kernel */
	__u64 no_socket;	/* owned, but no socket in xsks: fallback applied */
	__u64 pass_rule;	/* owned, but matched a pass rule: to the kernel */
	__u64 fanout_to_owner;	/* member's slot empty: to the owner (also redirected) */
};

#endif /* XDPD_RR_REDIRECT_H */
