// SPDX-License-Identifier: GPL-2.0
/*
 * lab: XDP programs for measuring throughput in the veth lab (xdpd/lab/xdp.py).
 * None of them is part of xdpd itself.
 *
 *  lab_gen    the generator.  Run by BPF_PROG_TEST_RUN with
 *             BPF_F_TEST_XDP_LIVE_FRAMES on gen0: its XDP_TX becomes a
 *             redirect out of the ingress device, i.e. ndo_xdp_xmit into the
 *             veth peer (in0), which needs an XDP program of its own.
 *             Counts every frame, so the offered count is exact even when a
 *             test run is cut short by a signal (-EINTR reports nothing).
 *             A frame built by lab/xdp.py build_frame() carries a lab header at
 *             the start of its UDP payload (magic, flows, base port): the
 *             UDP source port is then set to base + n % flows, n counting
 *             this CPU's frames.  Only the port changes: the IPv4 header
 *             (and so its checksum) is untouched, the UDP checksum is 0.
 *             Live frames recycle their pages without copying the template
 *             again, so the port is written on every frame, never derived
 *             from what the page holds.
 *             xdpd/lab/xdp.py also keeps it attached (generic mode, a BPF
 *             link) to lo: a program attached somewhere stays in the kernel's
 *             XDP dispatcher, and a test run of one that is not costs two
 *             RCU grace periods (~25 ms) to add and remove it.  On lo it
 *             passes everything, uncounted.
 *  lab_count  the sink: counts packets and bytes, and if conf asks for it,
 *             the packets whose destination MAC is the expected one; drops.
 *  lab_fwd    the in-kernel ceiling: optional MAC rewrite, then
 *             bpf_redirect_map() to tx_port[0] (a DEVMAP entry).  Frames the
 *             target cannot take (its peer's ring full) are lost after the
 *             verdict: ethtool -S on the devices counts them, not this.
 *
 * One loaded copy of the object serves one role; its conf and stats are its
 * own.  stats is per CPU, summed by user space.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* lab_conf.flags */
#define LAB_CHECK_DST_MAC	(1U << 0)	/* lab_count: count dst_mac_ok */
#define LAB_SET_DST_MAC		(1U << 1)	/* lab_fwd: rewrite dst MAC */
#define LAB_SET_SRC_MAC		(1U << 2)	/* lab_fwd: rewrite src MAC */

/* include/net/flow.h: lo's ifindex in every netns */
#define LOOPBACK_IFINDEX	1

/* "XDPL": the lab header at the start of the UDP payload */
#define LAB_MAGIC		0x5844504cU

struct lab_conf {
	__u32 flags;
	__u8 expect_dst[ETH_ALEN];
	__u8 set_dst[ETH_ALEN];
	__u8 set_src[ETH_ALEN];
	__u8 pad[2];
};

struct lab_stats {
	__u64 packets;
	__u64 bytes;
	__u64 dst_mac_ok;
	__u64 redirected;
	__u64 redirect_failed;
};

/* in the UDP payload, network byte order */
struct lab_hdr {
	__be32 magic;
	__be32 flows;
	__be16 base_port;
} __attribute__((packed));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lab_conf);
} lab_conf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lab_stats);
} lab_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tx_port SEC(".maps");

static __always_inline struct lab_stats *stats_slot(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&lab_stats, &key);
}

static __always_inline struct lab_conf *conf_slot(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&lab_conf, &key);
}

/* clang 14 does not inline __builtin_memcmp for BPF */
static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) |
		(a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

SEC("xdp")
int lab_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	struct lab_hdr *lh = (void *)(udp + 1);
	struct lab_stats *st = stats_slot();
	__u64 n;
	__u32 flows;

	/* attached to lo only to stay in the dispatcher: hands off */
	if (ctx->ingress_ifindex == LOOPBACK_IFINDEX)
		return XDP_PASS;
	if (!st)
		return XDP_TX;
	n = st->packets++;
	st->bytes += data_end - data;

	/* only build_frame()'s layout: no IP options, UDP, the lab header */
	if ((void *)(lh + 1) > data_end)
		return XDP_TX;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP || lh->magic != bpf_htonl(LAB_MAGIC))
		return XDP_TX;
	flows = bpf_ntohl(lh->flows);
	if (flows > 1)
		udp->source = bpf_htons(bpf_ntohs(lh->base_port) + (__u16)(n % flows));
	return XDP_TX;
}

/* frags: counts whole packets at any MTU (bytes: every buffer) */
SEC("xdp.frags")
int lab_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct lab_stats *st = stats_slot();
	struct lab_conf *conf = conf_slot();

	if (!st || !conf)
		return XDP_DROP;
	st->packets++;
	st->bytes += bpf_xdp_get_buff_len(ctx);
	if ((conf->flags & LAB_CHECK_DST_MAC) && (void *)(eth + 1) <= data_end &&
	    mac_equal(eth->h_dest, conf->expect_dst))
		st->dst_mac_ok++;
	return XDP_DROP;
}

/* frags: attaches at any MTU (a veth over a page of MTU refuses a program
 * without them); it reads and writes the MACs only, in the linear part */
SEC("xdp.frags")
int lab_fwd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct lab_stats *st = stats_slot();
	struct lab_conf *conf = conf_slot();
	long act;

	if (!st || !conf)
		return XDP_ABORTED;
	st->packets++;
	st->bytes += data_end - data;
	if ((void *)(eth + 1) <= data_end) {
		if (conf->flags & LAB_SET_DST_MAC)
			__builtin_memcpy(eth->h_dest, conf->set_dst, ETH_ALEN);
		if (conf->flags & LAB_SET_SRC_MAC)
			__builtin_memcpy(eth->h_source, conf->set_src, ETH_ALEN);
	}
	/* an empty slot: XDP_DROP (flags' low bits), counted as failed */
	act = bpf_redirect_map(&tx_port, 0, XDP_DROP);
	if (act == XDP_REDIRECT)
		st->redirected++;
	else
		st->redirect_failed++;
	return act;
}

char _license[] SEC("license") = "GPL";
