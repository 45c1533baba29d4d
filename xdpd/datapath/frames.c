// SPDX-License-Identifier: GPL-2.0
/*
 * frames.c: frame ownership (fastpath.h, "Frame ownership"): whose frame
 * an address is (frame_*, home_of), our free list (free_push), frames
 * going home (ret_push, rx_drop), and an owner's view of its fanout
 * members' counts (port_sync_members, port_tx_inflight).  Part of
 * _fastpath.c's unity build, inlined into the loop step.  Every address a
 * kernel or a peer gives is checked here before it is used; a count
 * another process wrote must be bounded before it moves one of ours.
 */

/* Only for an address below frames_end (a division: not on the common
 * path, where frame_mine() or frame_ok() answer with a compare). */
static inline uint32_t home_of(PortObject *p, uint64_t addr)
{
	return (uint32_t)(addr / p->home_span);
}

/* addr lies in a frame homed at worker `home`.  Worker w's frames are the
 * bytes [w * home_span, (w + 1) * home_span) of the UMEM, all inside the
 * mapping (port_open checked), so one unsigned compare also refuses an
 * address below them, past them or past the UMEM. */
static inline bool frame_homed(PortObject *p, uint64_t addr, uint32_t home)
{
	return addr - (uint64_t)home * p->home_span < p->home_span;
}

static inline bool frame_mine(PortObject *p, uint64_t addr)
{
	return addr - p->home_base < p->home_span;
}

/* a frame of the worker whose frames arrive on our RX ring (the owner) */
static inline bool frame_rx_home(PortObject *p, uint64_t addr)
{
	return addr - p->rx_base < p->home_span;
}

/* Our own frame back on the free list.  A free list can hold all our
 * frames and no more: a push past that means a frame came back twice
 * (someone else's bug); it is refused and counted, never written. */
static inline void free_push(PortObject *p, uint64_t addr)
{
	if (p->n_free >= p->fpw) {
		p->st.bad_descs++;
		return;
	}
	p->freelist[p->n_free++] = addr & p->frame_mask;
}

/* entries on a shared ring, never more than it can hold (a peer that
 * wrote garbage into its index cannot make us walk past the ring) */
static inline uint32_t hring_take(PortObject *p, struct fp_ring *r)
{
	uint32_t n = hring_avail(r);

	return n > p->ring_entries ? p->ring_entries : n;
}

/* A frame of `home`'s goes back there on the ret ring (published at commit). */
static inline void ret_push(PortObject *p, uint32_t home, uint64_t addr)
{
	struct fp_ring *r = p->ret_out[home];
	uint32_t prod = r->prod + p->ret_pending[home]++;

	/* cannot be full: a ring holds all of home's frames */
	r->slots[prod & (p->ring_entries - 1)] = addr & p->frame_mask;
	p->wake[home] = 1;
}

/* A received frame we let go of (a drop): our free list, or, for a fanout
 * member, back to the owner whose frame it is. */
static inline void rx_drop(PortObject *p, const bool member, uint64_t addr)
{
	if (member)
		ret_push(p, p->owner, addr);
	else
		free_push(p, addr);
}

/* addr lies in a frame homed at worker `home`, and addr + len in that frame
 * (frame_size is a power of two: parse_params) */
static inline bool frame_ok(PortObject *p, uint64_t addr, uint32_t len, uint32_t home)
{
	return frame_homed(p, addr, home) &&
	       (addr & (p->frame_size - 1)) + len <= p->frame_size;
}

/*
 * An owner takes in its fanout members' counters (fastpath.h, "Fanout"):
 * the frames they received since the last look move from rx to handoff,
 * those of them they put on their own TX rings from handoff to tx, where
 * our COMPLETION ring gives them back.  Each member's counters are read
 * from one committed half of its record (retried while it commits over
 * it; after a few tries, left for the next look).  A count beyond what we
 * gave out is a lie, counted as bad descriptors, never a wrapped count.
 */
static void port_sync_members(PortObject *p)
{
	uint64_t rx = 0, tx = 0, sent = 0, d;

	for (uint32_t k = 0; k < p->n_members; k++) {
		struct fp_commit *c = &ctl_worker(p->v, p->members[k])->commit;
		int tries;

		for (tries = 0; tries < 8; tries++) {
			uint64_t w = __atomic_load_n(&c->word, __ATOMIC_ACQUIRE);
			const struct fp_counts *m = &c->counts[(w >> 1) & 1];
			uint64_t a = __atomic_load_n(&m->fanout.took_rx, __ATOMIC_RELAXED);
			uint64_t b = __atomic_load_n(&m->fanout.took_tx, __ATOMIC_RELAXED);
			uint64_t n = __atomic_load_n(&m->stats.tx_descs, __ATOMIC_RELAXED);

			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if ((__atomic_load_n(&c->word, __ATOMIC_RELAXED) >> 1) == (w >> 1)) {
				rx += a;
				tx += b;
				sent += n;
				break;
			}
		}
		if (tries == 8)
			return;
	}
	p->members_sent = sent;
	if (rx > p->fan.seen_rx) {
		d = rx - p->fan.seen_rx;
		if (d > p->n_rx) {
			p->st.bad_descs += d - p->n_rx;
			d = p->n_rx;
		}
		p->n_rx -= d;
		p->n_handoff += d;
	}
	if (tx > p->fan.seen_tx) {
		d = tx - p->fan.seen_tx;
		if (d > p->n_handoff) {
			p->st.bad_descs += d - p->n_handoff;
			d = p->n_handoff;
		}
		p->n_handoff -= d;
		p->n_tx += d;
	}
	p->fan.seen_rx = rx;
	p->fan.seen_tx = tx;
}

/* Whose frames worker w lends: its own, or a fanout member its owner's
 * (the slot is the supervisor's to write: a bad value is taken as w). */
static inline uint32_t lender_home(PortObject *p, uint32_t w)
{
	uint32_t o = __atomic_load_n(&ctl_assign(p->v, w)->owner, __ATOMIC_RELAXED);

	return o < p->nworkers ? o : w;
}

/*
 * Descriptors put on our TX ring that the wire still has: for a fanout
 * member, those the kernel has not taken yet (their completions reach the
 * owner); for anyone else, everything sent (ours, borrowed, and our
 * members') less every completion.  A draining worker waits for 0.
 */
static uint64_t port_tx_inflight(PortObject *p)
{
	uint64_t sent = p->st.tx_descs + p->members_sent;

	if (p->member)
		return p->tx.cached_prod - load_acquire(p->tx.consumer);
	return sent > p->fan.completed ? sent - p->fan.completed : 0;
}
