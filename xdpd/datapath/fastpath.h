/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The control area: one shared-memory region (a memfd made by the
 * supervisor, mapped by every worker) that holds everything processes
 * exchange about packets, so that no packet ever crosses a pipe or a socket
 * between them.
 *
 *   struct fp_header                      layout and sizes (for the record:
 *                                          every process computes the layout
 *                                          itself and reads nothing here)
 *   struct fp_worker  x nworkers          liveness, ring use, the commit
 *                                          record (counters and frame
 *                                          locations)
 *   redo logs         x nworkers          the commit record's ring updates
 *   free lists        x nworkers          u64 frame addresses, LIFO
 *   handoff rings     x nworkers^2        "fwd": ingress -> egress worker
 *   return rings      x nworkers^2        "ret": egress  -> home worker
 *
 * The tables area (struct fp_tables_area): a second memfd, written by the
 * supervisor alone, with what workers read and must not change: each
 * slot's assignment (netdev, queue, fanout owner and members) and the two
 * forwarding tables.  The supervisor maps it read-write and then seals it
 * (F_SEAL_FUTURE_WRITE, SHRINK, GROW, SEAL), so every later mapping, a
 * worker's included, is read-only and cannot be made writable (mprotect,
 * write(), a reopen through /proc all fail).  What workers exchange with
 * each other (rings, sleeping flags, commit records they read) stays in the
 * control area, where every reader checks what it takes (docs/SECURITY.md).
 *
 * Frame ownership.  UMEM frame i belongs to ("is homed at") worker
 * i / frames_per_worker.  A home worker accounts for each of its frames in
 * exactly one of four places, and only it changes those counts:
 *   free     on its free list
 *   rx       given to its FILL ring, not yet back from its RX ring
 *   tx       put on its own TX ring, not yet back from its COMPLETION ring
 *   handoff  lent to another worker (fwd ring, that worker's TX path, the
 *            ret ring back home), not yet popped from the ret ring
 * free + rx + tx + handoff == frames_per_worker at the end of every loop
 * iteration; the worker publishes the four numbers in its commit record.
 *
 * Crash consistency (the commit record).  A worker can be killed (SIGKILL,
 * a crash) at any instruction, and its replacement continues on the same
 * socket, so what the dead worker left in shared memory must describe
 * exactly where every frame is.  A loop iteration therefore changes nothing
 * another party can see until its end: descriptors are written past the
 * producer indices, free-list pushes past the committed count, and every
 * index it would publish (its FILL and TX producers, RX and COMPLETION
 * consumers, the producers of its outgoing and the consumers of its
 * incoming handoff rings) is only noted.  Then it commits:
 *   1. the new counts (frames and counters) into counts[(seq + 1) & 1];
 *   2. the index updates into its redo log (which word, which value);
 *   3. word = (seq + 1) << 1 | 1       the commit point ("pending");
 *   4. the index updates applied (release stores);
 *   5. word = (seq + 1) << 1           done.
 * Killed before 3: the iteration never happened (counts[seq & 1] and the
 * rings still agree; what it read is still there to be read again).  Killed
 * after 3: the replacement applies the redo log again (every word in it is
 * written by this worker alone, so doing it twice is harmless) and takes
 * counts[seq & 1].  Readers (the supervisor) read counts[seq & 1] and
 * retry if seq moved meanwhile.  One thing is not undone: a MAC rewrite of
 * a packet whose iteration is then lost is done again on the retry, which
 * is harmless for set_dst/set_src and undoes a swap (one packet per crash).
 *
 * Worker slots.  nworkers is the number of slots the area (and the UMEM)
 * was sized for: the workers running now plus spare ones a reload can add
 * without a restart.  A slot that is not in use has state NONE (or
 * STOPPED) and all its frames on its free list; it is never an egress.
 * A slot is given back (reset_worker) only after its worker drained: no
 * frame of it anywhere else, no ring to or from it holding anything.
 *
 * Fanout.  Several workers may share one (netdev, queue): their sockets are
 * bound to the same queue and the XDP program spreads the queue's packets
 * across them.  The kernel gives such sockets one FILL and one COMPLETION
 * ring between them (one buffer pool per queue), and those rings are
 * single-producer single-consumer too, so one worker, the group's owner,
 * maps and drives them; the others (members) map only their RX and TX
 * rings.  So every frame a member receives is the owner's, lent to it by
 * the kernel, and every frame a member transmits completes on the owner's
 * COMPLETION ring.  The owner's accounting stays exact with two counters
 * per member (struct fp_fanout): frames it received (rx -> handoff at the
 * owner) and, of those, frames it put on its own TX ring (handoff -> tx);
 * the owner adds up its members' committed counters before it takes
 * returns and completions, and again when a return or completion finds
 * its count at zero (it may have raced ahead of the member's commit it
 * follows from).  A member gives an owner's frame back on its ret ring
 * (a drop), or lends it on like any other frame; its own slot's frames
 * stay on its free list.
 *
 * Every ring here is single-producer single-consumer: ring (i, j) is written
 * only by worker i and read only by worker j.  Ring entries pack a UMEM
 * address and a length: addr | len << 48; on a fwd ring, bit 47 set
 * (RING_CONTD) says the next entry is the same packet's next fragment.  Each ring has as many slots as a
 * worker has frames, so a ring can never overflow: no worker can lend more
 * frames than it owns.
 */
#ifndef XDPD_FASTPATH_H
#define XDPD_FASTPATH_H

#include <stdint.h>
#include <linux/filter.h>

#define FP_MAGIC		0x7864706463746c31ULL	/* "xdpdctl1" */
#define FP_VERSION		13	/* 2: fp_stats.busy_polls; 3: ring use, slots, drain;
					 * 4: commit record, too_long, bad_descs;
					 * 5: rules per netdev with matches, rule counters;
					 * 6: fp_rule.vlan_op, VLAN push/pop;
					 * 7: fanout groups, fp_worker.lane;
					 * 8: the tables area (assignments, tables),
					 *    fp_netdev.flags, csum_completed;
					 * 9: direct transmission (fp_assign.direct,
					 *    fp_table.direct_ok, fp_stats.direct_*);
					 * 10: descriptor chains (chain_invalid,
					 *    fp_stats.rx_frags, tx_descs);
					 * 11: capture slots and rings;
					 * 12: fp_stats.busy_ns;
					 * 13: fp_worker.host, runner */
#define FP_CACHELINE		64
#define FP_MAX_WORKERS		256
#define FP_MAX_NETDEVS		64
#define FP_MAX_EGRESS		256	/* egress workers (queues) per netdev */
#define FP_MAX_RULES		16	/* forward rules per ingress netdev
					 * (config.MAX_FORWARD_RULES) */
#define FP_MAX_FANOUT		16	/* workers sharing one queue (config.MAX_FANOUT,
					 * XDPD_MAX_FANOUT in bpf/rr_redirect.h) */

#define FP_MAX_HOSTED		8	/* slots one worker process may host
					 * besides its own */
#define FP_MAX_DIRECT		8	/* egress queues one worker transmits on
					 * itself, a TX socket of its own on each
					 * (direct.c, "Direct transmission") */

#define FP_MAX_SEGS		64	/* descriptors one packet may take (a
					 * port's max_segs: MAX_SKB_FRAGS + 1 in
					 * copy mode, the NIC's xdp-zc-max-segs in
					 * zero-copy; rx.c, "Descriptor chains") */

/* Capture ("Capture" below): slots at once, a filter's most instructions
 * (BPF_MAXINSNS), and the bytes of one worker's ring for one slot. */
#define FP_MAX_CAPTURES		4
#define FP_CAPTURE_INSNS	4096
#define FP_CAPTURE_RING		(128 * 1024)

#define FP_ALIGNED __attribute__((aligned(FP_CACHELINE)))

/* Why a worker let go of a packet. Bounded: these become metric labels. */
enum fp_drop_reason {
	FP_DROP_NO_RULE,	/* no forward rule for the ingress netdev */
	FP_DROP_RULE,		/* a rule said drop */
	FP_DROP_INVALID,	/* descriptor or frame unusable (runt, too long) */
	FP_DROP_EGRESS_DOWN,	/* egress worker not running */
	FP_DROP_TOO_LONG,	/* longer than the egress netdev takes (rule max_len) */
	FP_DROP_CHAIN_INVALID,	/* a descriptor chain that lies: no end within
				 * max_segs, a zero-length or foreign fragment,
				 * headers not all in fragment 0 */
	FP_DROP__MAX,
};

enum fp_action {
	FP_ACT_NONE,		/* no rule: drop, counted as no_rule */
	FP_ACT_FORWARD,
	FP_ACT_DROP,
};

enum fp_mac_flags {
	FP_MAC_SET_DST = 1 << 0,
	FP_MAC_SET_SRC = 1 << 1,
	FP_MAC_SWAP    = 1 << 2,
};

/* What a forward rule does to the outer VLAN tag, after any MAC rewrite. */
enum fp_vlan_op {
	FP_VLAN_NONE,
	FP_VLAN_PUSH,		/* insert vlan_tpid + vlan_tci after the MACs */
	FP_VLAN_POP,		/* remove the outer tag; untagged: unchanged */
};

/* Worker states as the worker itself reports them. */
enum fp_worker_state {
	FP_STATE_NONE,		/* never started */
	FP_STATE_STARTING,	/* rings being mapped */
	FP_STATE_RUNNING,	/* in its loop, FILL ring primed */
	FP_STATE_STOPPED,	/* left its loop cleanly */
	FP_STATE_DRAINING,	/* being removed: its socket is out of XSKMAP and its
				 * RX ring stayed empty; still a valid egress that
				 * transmits what it is handed */
};

struct fp_stats {
	uint64_t rx_packets;
	uint64_t rx_bytes;
	uint64_t tx_packets;
	uint64_t tx_bytes;
	uint64_t drops[FP_DROP__MAX];
	uint64_t handoff_out;	/* packets passed to another worker */
	uint64_t handoff_in;	/* packets taken from another worker */
	uint64_t tx_kicks;	/* sendto() calls to start transmission */
	uint64_t fill_kicks;	/* recvfrom() calls for a FILL need_wakeup */
	uint64_t sleeps;	/* times the worker blocked in poll() */
	uint64_t loops;		/* loop iterations */
	uint64_t busy_loops;	/* iterations that moved at least one frame */
	uint64_t busy_polls;	/* recvfrom()/sendto() made only to drive NAPI
				 * (busy polling), not asked for by need_wakeup */
	uint64_t bad_descs;	/* descriptors refused: an address outside the
				 * UMEM or not the frame's owner's, a length past
				 * its frame (from the kernel or a peer worker) */
	uint64_t csum_completed;	/* partial TCP/UDP checksums completed */
	uint64_t rx_frags;	/* descriptors of the packets received (rx_packets
				 * without chains; fragments per packet is
				 * rx_frags / rx_packets) */
	uint64_t tx_descs;	/* descriptors put on our TX ring: one per frame,
				 * as the COMPLETION ring gives them back */
	uint64_t busy_ns;	/* time in iterations that moved frames (Port.run),
				 * the kicks' kernel work included: how much of
				 * its CPU the worker's forwarding takes */
	/* on our direct socket j (fp_assign.direct[j]'s queue): packets and
	 * bytes sent, the egress netdev's transmissions; and frames its
	 * COMPLETION ring's owner gave back (sent - returned: still out) */
	uint64_t direct_packets[FP_MAX_DIRECT];
	uint64_t direct_bytes[FP_MAX_DIRECT];
	uint64_t direct_returned[FP_MAX_DIRECT];
	/* Per rule of our netdev's list (by position): packets the rule
	 * took (first match), whatever then became of them, and their bytes.
	 * Committed with the rest, so a replacement continues them; zeroed
	 * when the list changes (rule_sig, see port_load_rule). */
	uint64_t rule_sig;
	uint64_t rule_packets[FP_MAX_RULES];
	uint64_t rule_bytes[FP_MAX_RULES];
};

/* Where a worker's frames are (see "Frame ownership"). */
struct fp_frames {
	uint64_t free;
	uint64_t rx;
	uint64_t tx;
	uint64_t handoff;
};

/*
 * A fanout group's frame traffic (see "Fanout" above).  A member counts
 * the owner's frames it took off its RX ring, and of those the ones it
 * put on its own TX ring (their completions reach the owner's COMPLETION
 * ring); the owner counts how much of its members' counts it has moved
 * between its own locations, and every COMPLETION entry it consumed.
 * Committed with the rest: a replacement on either side continues them.
 */
struct fp_fanout {
	uint64_t took_rx;	/* member: owner's frames received */
	uint64_t took_tx;	/* member: of those, put on its own TX ring */
	uint64_t seen_rx;	/* owner: sum of its members' took_rx accounted */
	uint64_t seen_tx;	/* owner: sum of its members' took_tx accounted */
	uint64_t completed;	/* COMPLETION ring entries consumed, ever */
};

struct fp_counts {
	struct fp_frames frames;
	struct fp_stats stats;
	struct fp_fanout fanout;
};

/* One index update in a redo log: the word (FP_REDO_*, peer) and its value. */
enum fp_redo_word {
	FP_REDO_FILL_PROD,	/* our FILL ring's producer */
	FP_REDO_RX_CONS,	/* our RX ring's consumer */
	FP_REDO_TX_PROD,	/* our TX ring's producer */
	FP_REDO_COMP_CONS,	/* our COMPLETION ring's consumer */
	FP_REDO_FWD_OUT_PROD,	/* fwd ring us -> peer: producer */
	FP_REDO_RET_OUT_PROD,	/* ret ring us -> peer: producer */
	FP_REDO_FWD_IN_CONS,	/* fwd ring peer -> us: consumer */
	FP_REDO_RET_IN_CONS,	/* ret ring peer -> us: consumer */
	FP_REDO_DIRECT_PROD,	/* our direct TX ring `peer` (an index into
				 * fp_assign.direct): producer */
};

struct fp_redo {
	uint16_t word;		/* enum fp_redo_word */
	uint16_t peer;
	uint32_t value;
};

/* A redo log holds at most 4 kernel ring words + 4 per peer + one per
 * direct TX ring. */
#define FP_REDO_MAX(nworkers)	(4 + 4 * (uint64_t)(nworkers) + FP_MAX_DIRECT)

struct fp_commit {
	uint64_t word;		/* seq << 1 | pending (see "Crash consistency") */
	uint32_t log_len;	/* entries in this worker's redo log */
	uint32_t pad;
	struct fp_counts counts[2];	/* counts[seq & 1] is committed */
};

/* A slot's assignment, in the tables area: written by the supervisor
 * before the slot's worker starts. */
struct fp_assign {
	uint32_t netdev;	/* index into the table's by_netdev[] */
	uint32_t queue;
	uint32_t ifindex;
	uint32_t lane;		/* picks this worker's egress: queue * fanout + member */
	uint32_t owner;		/* the worker with the queue's FILL and COMPLETION
				 * rings: itself, unless a fanout member */
	uint32_t n_members;	/* owner of a fanout group: its other members */
	uint16_t members[FP_MAX_FANOUT];
	/* Direct transmission: TX-only sockets of this slot's, each bound to
	 * an egress queue with XDP_SHARED_UMEM (so sharing that queue's FILL
	 * and COMPLETION rings): direct[j] is the worker owning that queue's
	 * rings, whose COMPLETION ring gives the frames back. */
	uint32_t n_direct;
	uint16_t direct[FP_MAX_DIRECT];
	/* the inode of the slot's AF_XDP socket: a process hosting the slot
	 * (fp_worker.host) runs its port only on that socket; 0: free */
	uint64_t xsk_ino;
};

struct fp_worker {
	/* liveness: written by the worker */
	FP_ALIGNED uint64_t heartbeat_ns;	/* CLOCK_MONOTONIC */
	uint32_t pid;
	uint32_t state;			/* enum fp_worker_state */
	uint64_t table_generation;	/* last table generation applied */

	/* set by the worker before it blocks; producers that see it set
	 * clear it and write the worker's eventfd */
	FP_ALIGNED uint32_t sleeping;

	/* Hosting (docs/ARCHITECTURE.md): host, set by the supervisor, is the
	 * slot whose process should run this slot's port; asked, the slot
	 * whose process is ready to take it now (so that the one running it
	 * lets go only then: no gap); runner is the slot whose process runs it
	 * now, taken and given up by compare-and-swap (Control.claim), so
	 * that never two processes run one port.  Each is a slot id + 1; 0:
	 * its own process (host), nobody (asked, runner). */
	FP_ALIGNED uint32_t host;
	uint32_t asked;
	uint32_t runner;

	/* written by the worker, read by the supervisor and a replacement */
	FP_ALIGNED struct fp_commit commit;

	/* entries on each of the socket's rings (producer - consumer), as of
	 * the worker's last sleep or return to Python: at most one budget
	 * (200 ms) old; for the metrics, not for decisions */
	FP_ALIGNED struct fp_ring_use {
		uint32_t rx, tx, fill, comp;
	} ring_use;

	/* the worker process's own resource use, as it reports it between
	 * bursts (about once a second): the supervisor cannot read a worker's
	 * /proc under ProtectProc=ptraceable, the worker being another uid and
	 * not dumpable.  A claim of the worker, for metrics and logs only. */
	FP_ALIGNED struct fp_usage {
		uint32_t pid;		/* the process these are of */
		uint32_t pad;
		uint64_t user_ns, system_ns;	/* CPU time */
		uint64_t rss_bytes, uss_bytes;	/* resident; private to it */
	} usage;
};

struct fp_ring {
	FP_ALIGNED uint32_t prod;
	FP_ALIGNED uint32_t cons;
	FP_ALIGNED uint64_t slots[];
};

/* fp_match.fields: which fields a rule compares (XDPD_MATCH_* in
 * bpf/rr_redirect.h, the same bits and layout as struct xdpd_match, so the
 * supervisor writes both from one encoder). */
enum fp_match_fields {
	FP_MATCH_ETHERTYPE = 1 << 0,	/* after up to two VLAN tags */
	FP_MATCH_VLAN      = 1 << 1,	/* outer tag's VLAN id */
	FP_MATCH_UNTAGGED  = 1 << 2,	/* no 802.1Q/802.1ad tag */
	FP_MATCH_IP_PROTO  = 1 << 3,	/* IPv4 protocol / IPv6 next header */
	FP_MATCH_SRC       = 1 << 4,	/* src & src_mask == src */
	FP_MATCH_DST       = 1 << 5,
	FP_MATCH_SRC_PORT  = 1 << 6,	/* TCP or UDP */
	FP_MATCH_DST_PORT  = 1 << 7,
};

/* Ethertype, ports and addresses in network byte order; an IPv4 address is
 * word 0, words 1-3 zero.  fields == 0: the rule takes every packet. */
struct fp_match {
	uint32_t fields;		/* enum fp_match_fields */
	uint16_t ethertype;
	uint16_t vlan;			/* host byte order */
	uint8_t ip_proto;
	uint8_t pad;
	uint16_t src_port;
	uint16_t dst_port;
	uint16_t pad2;
	uint32_t src[4];
	uint32_t src_mask[4];
	uint32_t dst[4];
	uint32_t dst_mask[4];
};

struct fp_rule {
	struct fp_match match;
	uint32_t id;			/* its index in the config's `forward` */
	uint32_t action;		/* enum fp_action */
	uint32_t mac_flags;		/* enum fp_mac_flags */
	uint8_t dst_mac[6];
	uint8_t src_mac[6];
	uint32_t vlan_op;		/* enum fp_vlan_op */
	uint16_t vlan_tpid;		/* FP_VLAN_PUSH: 0x8100|0x88a8, network order */
	uint16_t vlan_tci;		/* FP_VLAN_PUSH: VLAN id, network order */
	uint32_t max_len;		/* longest frame the egress takes, after
					 * a push or pop; 0: any */
	uint32_t n_egress;		/* workers owning the egress netdev's queues */
	uint16_t egress[FP_MAX_EGRESS];	/* worker ids; pick by ingress queue */
};

/* fp_netdev.flags */
enum fp_netdev_flags {
	/* TCP/UDP frames from it may carry a partial checksum (a local
	 * stack's, through a veth or tap): complete those (parse.h,
	 * "Partial checksums") */
	FP_NETDEV_CSUM_COMPLETE = 1 << 0,
};

/* An ingress netdev's rules, tried in order: the first that matches wins;
 * none: dropped as no_rule. */
struct fp_netdev {
	uint32_t n_rules;
	uint32_t flags;			/* enum fp_netdev_flags */
	struct fp_rule rules[FP_MAX_RULES];
};

struct fp_table {
	uint64_t generation;
	uint32_t n_netdevs;
	uint32_t pad;
	struct fp_netdev by_netdev[FP_MAX_NETDEVS];	/* by ingress netdev */
	/* per worker slot, bit j: its direct socket j may be used (the queue
	 * it is bound to is served and stays); clear: that egress takes the
	 * fwd ring, and the socket is closed once nothing of it is out */
	uint8_t direct_ok[FP_MAX_WORKERS];
};

/*
 * Capture (`xdpd capture`, docs/ARCHITECTURE.md "Capture").  The
 * supervisor arms a slot in the tables area: which netdev and queue,
 * which points, the snap length and a classic BPF filter (cbpf.h), then
 * bumps capture_gen.  A worker that sees the generation move copies the
 * slots that concern it and checks each program itself; while no slot is
 * armed for it, capture costs it one test per batch.  For each packet a
 * slot's filter takes, the worker appends a record to its own ring for
 * that slot in the control area (struct fp_capring): a record that does
 * not fit is not written but counted, so a slow reader never holds a
 * packet back.  The reader (the supervisor, for a capture client) moves
 * the consumer.
 */
enum fp_cap_point {
	FP_CAP_RX   = 1 << 0,	/* as received, before the rules */
	FP_CAP_TX   = 1 << 1,	/* as it leaves, after the rewrite */
	FP_CAP_DROP = 1 << 2,	/* let go of, with the reason and the rule */
};

#define FP_CAP_ANY	UINT32_MAX	/* fp_capture.netdev / .queue: any */

struct fp_capture {
	uint32_t points;		/* enum fp_cap_point; 0: the slot is off */
	uint32_t netdev;		/* index in the table's by_netdev[], or any */
	uint32_t queue;			/* or any */
	uint32_t snaplen;		/* bytes of a frame kept, at most */
	uint32_t n_insns;
	uint32_t pad;
	struct sock_filter insns[FP_CAPTURE_INSNS];
};

/* One captured frame in a ring: this header, then cap_len bytes, the
 * whole record rounded up to FP_CAPREC_ALIGN.  point 0: padding to the
 * ring's end (a record never wraps; the alignment leaves room for a
 * padding header at any record boundary). */
#define FP_CAPREC_ALIGN	32
struct fp_caprec {
	uint32_t size;			/* of the whole record */
	uint8_t point;			/* enum fp_cap_point, one bit */
	uint8_t reason;			/* FP_CAP_DROP: enum fp_drop_reason */
	uint16_t rule;			/* the rule's position; 0xffff: none */
	uint32_t wire_len;		/* the packet's length (every fragment) */
	uint32_t cap_len;
	uint16_t queue;
	uint16_t netdev;
	uint32_t pad;
	uint64_t ts_ns;			/* CLOCK_REALTIME */
};

/* A worker's ring for one slot: single producer (the worker), single
 * consumer (the reader); byte counts that only grow. */
struct fp_capring {
	FP_ALIGNED uint64_t prod;	/* the worker's: bytes written */
	uint64_t captured;		/* the worker's: records written */
	uint64_t dropped;		/* the worker's: records that did not fit */
	FP_ALIGNED uint64_t cons;	/* the reader's: bytes read */
	FP_ALIGNED uint8_t data[FP_CAPTURE_RING];
};

struct fp_header {
	uint64_t magic;
	uint32_t version;
	uint32_t nworkers;
	uint32_t frames_per_worker;
	uint32_t frame_size;
	uint32_t ring_entries;
	uint32_t pad;
	uint64_t workers_off;
	uint64_t redo_off;
	uint64_t freelists_off;
	uint64_t rings_off;
	uint64_t ring_stride;
	uint64_t capture_off;
	uint64_t total_size;
};

/* The tables area (see the top of this file). */
struct fp_tables_area {
	uint64_t magic;
	uint32_t version;
	uint32_t pad;
	FP_ALIGNED uint32_t active_table;	/* 0 or 1 */
	uint32_t pad1;
	uint64_t generation;			/* of the active table */
	FP_ALIGNED struct fp_assign assign[FP_MAX_WORKERS];
	FP_ALIGNED struct fp_table table[2];
	/* capture slots: bit s of capture_mask set when slot s is armed;
	 * capture_gen moves with every change (see "Capture") */
	FP_ALIGNED uint64_t capture_gen;
	uint32_t capture_mask;
	uint32_t pad2;
	FP_ALIGNED struct fp_capture capture[FP_MAX_CAPTURES];
};

#endif /* XDPD_FASTPATH_H */
