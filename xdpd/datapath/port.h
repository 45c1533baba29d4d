/* SPDX-License-Identifier: GPL-2.0 */
/*
 * port.h: the Port's state (PortObject: a worker's rings, frame counts,
 * rules in force, handoff ring pointers, direct sockets) and what a port is
 * built from (struct port_cfg).  Definitions only: the code is in
 * commit.c, frames.c, direct.c, rx.c, loop.c and port.c, which _fastpath.c's
 * unity build includes after this.
 */
#ifndef XDPD_PORT_H
#define XDPD_PORT_H

/* One of our direct TX sockets ("Direct transmission"). */
struct direct_tx {
	struct ring tx;
	int fd;				/* -1: synthetic (or none) */
	uint32_t owner;			/* the worker owning its queue's COMPLETION ring */
	bool open;			/* mapped; once closed, closed for good */
	bool ok;			/* the active table lets us send on it */
};

/* Another worker's direct socket on our queue (we own its COMPLETION ring). */
struct direct_src {
	uint16_t w;			/* that worker */
	uint16_t j;			/* its socket's index in its fp_assign.direct */
};

typedef struct {
	PyObject_HEAD
	PyObject *control;		/* keeps the mapping alive */
	const struct ctl_view *v;	/* its layout: the control object's, private */
	const struct fp_tables_area *tab;	/* read-only: the active table */
	uint32_t ring_entries;		/* of the handoff rings */
	struct fp_worker *me;
	uint32_t id;
	uint32_t nworkers;
	int xsk_fd;			/* -1: synthetic rings, no socket */
	int efd;			/* our eventfd */
	int *peer_efd;			/* by worker id; -1: none */
	uint8_t *umem;
	uint64_t umem_size;
	uint64_t frame_mask;		/* ~(frame_size - 1) */
	uint64_t home_span;		/* bytes of UMEM homed at one worker */
	uint64_t home_base;		/* where ours start: id * home_span */
	uint64_t frames_end;		/* nworkers * home_span: past every frame */
	uint32_t frame_size;
	uint32_t fpw;			/* frames per worker */
	uint32_t batch;
	uint32_t max_segs;		/* descriptors a packet may take; 0: one
					 * (no chains: the socket has no XDP_USE_SG) */
	uint32_t spin;			/* 1: never sleep */
	/* adaptive spinning (Port_run): after work, keep looking for spin_ns
	 * before sleeping; spin_max_ns 0: sleep as soon as idle */
	uint64_t spin_max_ns, spin_ns, last_work_ns;
	bool slept;			/* since the last work */
	bool busy_poll;			/* we drive the NAPI context by syscalls */
	bool rx_empty;			/* the last look at the RX ring found nothing */
	bool draining;			/* reports DRAINING instead of RUNNING */
	struct ring rx, tx, fill, comp;
	uint64_t *freelist;
	/* our frame counts (fastpath.h, "Frame ownership") */
	uint64_t n_free, n_rx, n_tx, n_handoff;
	/* fanout (fastpath.h, "Fanout"): whose frames arrive on our RX ring
	 * (the owner: ourselves unless a member), our members if we own a
	 * group, and the group counters committed with our counts */
	uint32_t owner;
	uint64_t rx_base;		/* owner * home_span */
	bool member;			/* no FILL or COMPLETION ring of our own */
	uint32_t n_members;
	uint32_t members[FP_MAX_FANOUT];
	struct fp_fanout fan;
	uint64_t members_sent;		/* owner: its members' tx_descs, last sync */
	/* per-peer ring pointers */
	struct fp_ring **fwd_in, **fwd_out, **ret_in, **ret_out;
	uint8_t *wake;			/* peers to wake after this iteration */
	uint32_t *ret_pending;		/* ret ring entries written, not yet published */
	/* this iteration's index updates, published by port_commit() */
	struct fp_redo *redo;		/* our redo log in the control area */
	uint32_t redo_len;
	bool fill_kick;			/* the FILL ring wants a recvfrom() */
	/* the rules in force, copied out of the active table */
	uint64_t generation;
	struct fp_rule rule;		/* rules[0], or no rule: the common case */
	uint32_t egress;		/* worker id chosen from rule.egress */
	bool classify;			/* several rules, a match or a VLAN action:
					 * port_receive_rules */
	bool parse;			/* several rules or a match: parse each packet */
	bool csum;			/* complete partial checksums (FP_NETDEV_CSUM_COMPLETE) */
	uint32_t n_rules;
	struct fp_rule rules[FP_MAX_RULES];
	uint32_t rule_egress[FP_MAX_RULES];	/* worker id chosen for each */
	uint32_t *fwd_pending;		/* fwd ring entries written, not yet published */
	/* direct transmission: our TX-only sockets on egress queues; the one
	 * p->egress (and each rule) sends on, -1: the fwd ring */
	uint32_t n_direct;
	struct direct_tx direct[FP_MAX_DIRECT];
	int egress_direct;
	int rule_direct[FP_MAX_RULES];
	uint8_t direct_woken;		/* bit j: its owner woken since we last sent on j */
	uint32_t direct_naps;		/* naps in a row with frames out on direct sockets */
	/* as an egress owner: the others' direct sockets on our queue */
	uint32_t n_dsrc;
	struct direct_src *dsrc;
	uint8_t *dsrc_of;		/* by worker: 1 if it sends on our queue directly */
	/* capture (fastpath.h, "Capture"): the slots armed for our netdev and
	 * queue, copied out of the tables area and checked; cap_on: bit s for
	 * slot s, 0 (the common case) when none */
	uint64_t cap_gen;
	uint32_t cap_on;
	uint32_t netdev_idx, queue;
	struct port_cap {
		uint32_t points, snaplen, n;
		struct sock_filter *insns;	/* FP_CAPTURE_INSNS, ours */
	} cap[FP_MAX_CAPTURES];
	uint64_t cap_ts;		/* this batch's CLOCK_REALTIME, 0: not read */
	/* counters kept locally, published once per iteration */
	struct fp_stats st;
} PortObject;

static PyTypeObject PortType;

/* What a port is built from: Port() takes it from Python, microbench()
 * fills it in for its synthetic ports. */
struct port_cfg {
	uint32_t id;
	int xsk_fd;			/* -1: synthetic rings */
	int umem_fd;
	uint64_t umem_size;
	uint32_t rx, tx, fill, comp;	/* ring sizes */
	uint32_t batch;
	uint32_t max_segs;		/* 0: no chains; else 2..FP_MAX_SEGS */
	bool spin;
	bool busy_poll;
	uint32_t spin_max_us;		/* adaptive spinning's cap; 0: none */
	PortObject *adopt;		/* fuzz() only: take over this synthetic
					 * port's rings (synth_adopt()) */
	int direct_fd[FP_MAX_DIRECT];	/* our direct sockets, by fp_assign.direct
					 * index; -1: none (closed) */
	uint32_t n_direct_fd;
};

/* loop.c; direct_wake_owners() wakes what it found */
static void port_wake_peers(PortObject *p);

#endif /* XDPD_PORT_H */
