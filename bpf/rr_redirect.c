// SPDX-License-Identifier: GPL-2.0
/*
 * rr_redirect: the XDP program xdpd attaches to every netdev it owns queues on.
 *
 * For each packet it decides one thing: does the packet go to user space
 * (the AF_XDP socket of the rx queue it arrived on) or does it stay with the
 * kernel.  The kernel only delivers a redirected frame to a socket bound to
 * the same (netdev, queue) it arrived on, so the rx queue index is the whole
 * key; nothing here parses the packet.
 *
 *  - A queue xdpd does not own is passed, so management traffic (ssh,
 *    ARP, routing daemons) that the NIC steers to other queues keeps working.
 *  - An owned queue with a socket in xsks is redirected to it.
 *  - An owned queue without a socket (its worker is being restarted, or the
 *    supervisor is between tearing down and re-creating the socket) gets the
 *    queue's configured fallback: XDP_PASS (traffic falls back to the kernel
 *    stack) or XDP_DROP (nothing unexpected reaches the kernel).  The
 *    fallback is handed to bpf_redirect_map() in the flags' low bits, which
 *    the helper returns when the xsks entry is empty, so the decision costs
 *    one map lookup.
 *
 * One loaded instance serves one netdev: queue ids collide across netdevs,
 * and each netdev needs its own xsks map.  The supervisor writes queue_conf
 * and xsks; queue_stats is per CPU and summed by user space, so the fast
 * path never takes a lock or an atomic.  "redirected" counts this program's
 * verdict: a frame the socket then could not take (RX ring full, FILL ring
 * empty) shows up in the socket's XDP_STATISTICS, not here.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "rr_redirect.h"

/* rx queue index -> AF_XDP socket bound to that queue of this netdev */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XDPD_MAX_QUEUES);
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

SEC("xdp")
int rr_redirect(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index;
	struct xdpd_queue_conf *conf;
	struct xdpd_queue_stats *stats;
	long act;

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
	 * Round-robin or flow hash across several sockets of this queue goes
	 * here: pick a slot in an xsks keyed by (queue, slot) instead of
	 * queue.  Every candidate must be bound to this same queue; a socket
	 * of another queue would have the frame dropped by the kernel.
	 *
	 * On a miss the helper returns the flags' low bits; anything but
	 * XDP_DROP means XDP_PASS, so a bad conf value cannot become a
	 * BPF_F_* flag or another verdict.
	 */
	act = bpf_redirect_map(&xsks, q, conf->fallback == XDP_DROP ?
			       XDP_DROP : XDP_PASS);
	if (act == XDP_REDIRECT) {
		stats->redirected++;
		return XDP_REDIRECT;
	}

	stats->no_socket++;
	return act;
}

char _license[] SEC("license") = "GPL";
