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

/* queue_conf value: written by the supervisor, read per packet. */
struct xdpd_queue_conf {
	__u32 owned;	/* 1: xdpd owns this queue, redirect to its socket */
	__u32 fallback;	/* verdict when owned but no socket: XDP_PASS or XDP_DROP */
};

/* queue_stats value: per CPU, summed by user space. */
struct xdpd_queue_stats {
	__u64 redirected;	/* handed to the queue's AF_XDP socket */
	__u64 passed;		/* queue not owned: left to the kernel */
	__u64 no_socket;	/* owned, but no socket in xsks: fallback applied */
};

#endif /* XDPD_RR_REDIRECT_H */
