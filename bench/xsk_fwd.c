// SPDX-License-Identifier: GPL-2.0
/*
 * The benchmark's C peer: an AF_XDP forwarder in the style of the kernel's
 * xsk_fwd sample, on libxdp's xsk API.  Two sockets (one per interface,
 * the same queue) share one UMEM, each with its own FILL and COMPLETION
 * rings; one thread, pinned, polls both: what one receives is sent by the
 * other, with the MACs rewritten in `mac` mode, and completed frames go
 * back to one pool that refills both FILL rings.  No handoff between
 * processes, no Python, no per-packet bookkeeping beyond a stack of free
 * frames: what a minimal AF_XDP forwarder costs, for bench/perf.py.
 *
 *   xsk_fwd IN OUT [--queue Q] [--cpu N] [--mode io|mac]
 *           [--mac-in2out DST,SRC] [--mac-out2in DST,SRC]
 *
 * Runs until SIGINT or SIGTERM, then prints one JSON line of counters.
 * Built by `make bench` (cc ... -lxdp -lbpf); needs root.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <xdp/xsk.h>

#define FRAME_SIZE	XSK_UMEM__DEFAULT_FRAME_SIZE	/* 4096 */
#define NUM_FRAMES	16384
#define RING_SIZE	2048
#define BATCH		64

struct port {
	const char *ifname;
	struct xsk_socket *xsk;
	struct xsk_ring_cons rx, comp;
	struct xsk_ring_prod tx, fill;
	uint8_t dst[6], src[6];		/* mac mode: what frames leaving the *other* port get */
	uint64_t rx_packets, tx_packets, tx_kicks, fill_kicks;
	uint32_t in_flight;		/* on our TX ring, not yet completed */
};

static volatile sig_atomic_t stop;
static uint8_t *umem_base;
static uint64_t pool[NUM_FRAMES];
static uint32_t pool_n;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "xsk_fwd: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static int parse_macs(const char *text, uint8_t *dst, uint8_t *src)
{
	unsigned int d[6], s[6];

	if (sscanf(text, "%x:%x:%x:%x:%x:%x,%x:%x:%x:%x:%x:%x", &d[0], &d[1], &d[2], &d[3],
		   &d[4], &d[5], &s[0], &s[1], &s[2], &s[3], &s[4], &s[5]) != 12)
		return -1;
	for (int i = 0; i < 6; i++) {
		dst[i] = (uint8_t)d[i];
		src[i] = (uint8_t)s[i];
	}
	return 0;
}

/* Frames completed on p's COMPLETION ring go back to the pool. */
static void complete(struct port *p)
{
	uint32_t idx, n = xsk_ring_cons__peek(&p->comp, RING_SIZE, &idx);

	for (uint32_t i = 0; i < n; i++)
		pool[pool_n++] = *xsk_ring_cons__comp_addr(&p->comp, idx + i);
	if (n) {
		xsk_ring_cons__release(&p->comp, n);
		p->in_flight -= n;
	}
}

/* p's FILL ring topped up from the pool. */
static void refill(struct port *p)
{
	uint32_t idx, free = xsk_prod_nb_free(&p->fill, RING_SIZE);
	uint32_t n = free < pool_n ? free : pool_n;

	if (n && xsk_ring_prod__reserve(&p->fill, n, &idx) == n) {
		for (uint32_t i = 0; i < n; i++)
			*xsk_ring_prod__fill_addr(&p->fill, idx + i) = pool[--pool_n];
		xsk_ring_prod__submit(&p->fill, n);
	}
	if (xsk_ring_prod__needs_wakeup(&p->fill)) {
		recvfrom(xsk_socket__fd(p->xsk), NULL, 0, MSG_DONTWAIT, NULL, NULL);
		p->fill_kicks++;
	}
}

/* What `from` received, sent by `to` (as much as its TX ring takes: the
 * rest waits on the RX ring). */
static void forward(struct port *from, struct port *to, bool mac)
{
	uint32_t rx_idx, tx_idx, n = xsk_ring_cons__peek(&from->rx, BATCH, &rx_idx);

	if (n) {
		uint32_t room = xsk_prod_nb_free(&to->tx, n);

		if (room < n)
			n = room;
		if (n && xsk_ring_prod__reserve(&to->tx, n, &tx_idx) == n) {
			for (uint32_t i = 0; i < n; i++) {
				const struct xdp_desc *rd = xsk_ring_cons__rx_desc(&from->rx, rx_idx + i);
				struct xdp_desc *td = xsk_ring_prod__tx_desc(&to->tx, tx_idx + i);

				if (mac) {
					uint8_t *pkt = xsk_umem__get_data(umem_base, rd->addr);

					memcpy(pkt, to->dst, 6);
					memcpy(pkt + 6, to->src, 6);
				}
				td->addr = rd->addr;
				td->len = rd->len;
				td->options = 0;
			}
			xsk_ring_prod__submit(&to->tx, n);
			xsk_ring_cons__release(&from->rx, n);
			from->rx_packets += n;
			to->tx_packets += n;
			to->in_flight += n;
		}
	}
	if (to->in_flight && xsk_ring_prod__needs_wakeup(&to->tx)) {
		sendto(xsk_socket__fd(to->xsk), NULL, 0, MSG_DONTWAIT, NULL, 0);
		to->tx_kicks++;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"queue", required_argument, NULL, 'q'},
		{"cpu", required_argument, NULL, 'c'},
		{"mode", required_argument, NULL, 'm'},
		{"mac-in2out", required_argument, NULL, 'a'},
		{"mac-out2in", required_argument, NULL, 'b'},
		{NULL, 0, NULL, 0},
	};
	struct xsk_umem_config ucfg = {
		.fill_size = RING_SIZE, .comp_size = RING_SIZE, .frame_size = FRAME_SIZE,
		.frame_headroom = 0, .flags = 0,
	};
	struct xsk_socket_config scfg = {
		.rx_size = RING_SIZE, .tx_size = RING_SIZE,
		.xdp_flags = XDP_FLAGS_DRV_MODE, .bind_flags = XDP_USE_NEED_WAKEUP | XDP_COPY,
	};
	struct port ports[2] = {0};
	struct xsk_umem *umem;
	int queue = 0, cpu = -1, opt, err;
	bool mac = false;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'q': queue = atoi(optarg); break;
		case 'c': cpu = atoi(optarg); break;
		case 'm':
			if (strcmp(optarg, "io") && strcmp(optarg, "mac"))
				goto usage;
			mac = !strcmp(optarg, "mac");
			break;
		case 'a':
			if (parse_macs(optarg, ports[1].dst, ports[1].src))
				goto usage;
			break;
		case 'b':
			if (parse_macs(optarg, ports[0].dst, ports[0].src))
				goto usage;
			break;
		default:
			goto usage;
		}
	}
	if (argc - optind != 2)
		goto usage;
	ports[0].ifname = argv[optind];
	ports[1].ifname = argv[optind + 1];
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			die("sched_setaffinity", errno);
	}
	umem_base = mmap(NULL, (size_t)NUM_FRAMES * FRAME_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (umem_base == MAP_FAILED)
		die("mmap", errno);
	err = xsk_umem__create(&umem, umem_base, (uint64_t)NUM_FRAMES * FRAME_SIZE,
			       &ports[0].fill, &ports[0].comp, &ucfg);
	if (err)
		die("xsk_umem__create", err);
	for (int i = 0; i < 2; i++) {
		err = xsk_socket__create_shared(&ports[i].xsk, ports[i].ifname, queue, umem,
						&ports[i].rx, &ports[i].tx, &ports[i].fill,
						&ports[i].comp, &scfg);
		if (err)
			die(ports[i].ifname, err);
	}
	for (uint32_t f = 0; f < NUM_FRAMES; f++)
		pool[pool_n++] = (uint64_t)f * FRAME_SIZE;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	for (int i = 0; i < 2; i++)
		refill(&ports[i]);
	printf("{\"ready\": true}\n");
	fflush(stdout);
	while (!stop) {
		for (int i = 0; i < 2; i++) {
			forward(&ports[i], &ports[1 - i], mac);
			complete(&ports[1 - i]);
			refill(&ports[i]);
		}
	}
	printf("{\"rx\": [%llu, %llu], \"tx\": [%llu, %llu], \"tx_kicks\": %llu, "
	       "\"fill_kicks\": %llu}\n",
	       (unsigned long long)ports[0].rx_packets, (unsigned long long)ports[1].rx_packets,
	       (unsigned long long)ports[0].tx_packets, (unsigned long long)ports[1].tx_packets,
	       (unsigned long long)(ports[0].tx_kicks + ports[1].tx_kicks),
	       (unsigned long long)(ports[0].fill_kicks + ports[1].fill_kicks));
	for (int i = 0; i < 2; i++)
		xsk_socket__delete(ports[i].xsk);
	xsk_umem__delete(umem);
	return 0;
usage:
	fprintf(stderr, "usage: xsk_fwd IN OUT [--queue Q] [--cpu N] [--mode io|mac] "
		"[--mac-in2out DST,SRC] [--mac-out2in DST,SRC]\n");
	return 2;
}
