/* SPDX-License-Identifier: GPL-2.0 */
/*
 * layout.h: where the control area's parts are (fastpath.h says what they
 * hold): ctl_layout() computes the offsets from four parameters, the ctl_*
 * accessors find a worker's record, redo log, free list, rings, table and
 * assignment in a mapping, ctl_counts() copies a committed set of counts,
 * ctl_reset_slot() gives a slot back.  Used by the Control object and the
 * Port alike; part of _fastpath.c's unity build.  Must not take a layout
 * from the shared header (every worker can write it: docs/SECURITY.md).
 */
#ifndef XDPD_LAYOUT_H
#define XDPD_LAYOUT_H

struct ctl_params {
	uint32_t nworkers;
	uint32_t frames_per_worker;
	uint32_t frame_size;
	uint32_t ring_entries;
};

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* Fills the offsets of hdr from p; returns the total size. */
static uint64_t ctl_layout(const struct ctl_params *p, struct fp_header *hdr)
{
	uint64_t off = align_up(sizeof(struct fp_header), FP_CACHELINE);
	uint64_t n = p->nworkers;

	hdr->workers_off = off;
	off += align_up(sizeof(struct fp_worker), FP_CACHELINE) * n;
	hdr->redo_off = off;
	off += align_up(FP_REDO_MAX(n) * sizeof(struct fp_redo), FP_CACHELINE) * n;
	hdr->freelists_off = off;
	off += align_up((uint64_t)p->frames_per_worker * 8, FP_CACHELINE) * n;
	hdr->rings_off = off;
	hdr->ring_stride = align_up(sizeof(struct fp_ring) + (uint64_t)p->ring_entries * 8,
				    FP_CACHELINE);
	off += hdr->ring_stride * n * n * 2;
	hdr->capture_off = off = align_up(off, FP_CACHELINE);
	off += sizeof(struct fp_capring) * FP_MAX_CAPTURES * n;
	hdr->total_size = align_up(off, 4096);
	return hdr->total_size;
}

/*
 * Where the control area's parts are.  Whoever maps the area computes the
 * layout from parameters of its own (ctl_layout(): the supervisor from its
 * configuration, a worker from its spec) and keeps it here, in private
 * memory: the header in the shared area is written for the record, never
 * read back for an address or a count, because every worker can write it
 * (docs/SECURITY.md).
 */
struct ctl_lay {			/* struct fp_header's layout fields */
	uint32_t nworkers, frames_per_worker, frame_size, ring_entries;
	uint64_t workers_off, redo_off, freelists_off, rings_off, ring_stride;
	uint64_t capture_off;
	uint64_t total_size;
};

struct ctl_view {
	char *base;			/* the shared mapping */
	uint64_t size;			/* its length */
	struct ctl_lay lay;		/* offsets and counts, private */
	struct fp_tables_area *tab;	/* the tables area: read-only in a worker */
};

/* The tables area's size: fixed, whole pages. */
#define TABLES_SIZE ((sizeof(struct fp_tables_area) + 4095) & ~(size_t)4095)

static void ctl_lay_of(struct ctl_lay *l, const struct fp_header *h)
{
	*l = (struct ctl_lay){
		.nworkers = h->nworkers, .frames_per_worker = h->frames_per_worker,
		.frame_size = h->frame_size, .ring_entries = h->ring_entries,
		.workers_off = h->workers_off, .redo_off = h->redo_off,
		.freelists_off = h->freelists_off, .rings_off = h->rings_off,
		.ring_stride = h->ring_stride, .capture_off = h->capture_off,
		.total_size = h->total_size,
	};
}

static inline struct fp_worker *ctl_worker(const struct ctl_view *v, uint32_t i)
{
	return (struct fp_worker *)(v->base + v->lay.workers_off +
				    align_up(sizeof(struct fp_worker), FP_CACHELINE) * i);
}

static inline struct fp_redo *ctl_redo(const struct ctl_view *v, uint32_t i)
{
	return (struct fp_redo *)(v->base + v->lay.redo_off +
				  align_up(FP_REDO_MAX(v->lay.nworkers) * sizeof(struct fp_redo),
					   FP_CACHELINE) * i);
}

static inline uint64_t *ctl_freelist(const struct ctl_view *v, uint32_t i)
{
	return (uint64_t *)(v->base + v->lay.freelists_off +
			    align_up((uint64_t)v->lay.frames_per_worker * 8, FP_CACHELINE) * i);
}

/* fwd ring from -> to (packets to transmit), ret ring from -> to (frames home) */
static inline struct fp_ring *ctl_ring(const struct ctl_view *v, int ret, uint32_t from,
				       uint32_t to)
{
	uint64_t n = v->lay.nworkers;
	uint64_t idx = (uint64_t)ret * n * n + (uint64_t)from * n + to;

	return (struct fp_ring *)(v->base + v->lay.rings_off + v->lay.ring_stride * idx);
}

static inline struct fp_table *ctl_table(const struct ctl_view *v, uint32_t which)
{
	return &v->tab->table[which & 1];
}

/* Slot i's assignment (netdev, queue, fanout): the supervisor's to write. */
static inline struct fp_assign *ctl_assign(const struct ctl_view *v, uint32_t i)
{
	return &v->tab->assign[i];
}

/* The shared header: magic, version and the layout, for the record;
 * nothing in it is read. */
/* Worker i's capture ring for slot s. */
static inline struct fp_capring *ctl_capring(const struct ctl_view *v, uint32_t i, uint32_t s)
{
	return (struct fp_capring *)(v->base + v->lay.capture_off) + (uint64_t)i * FP_MAX_CAPTURES + s;
}

static inline struct fp_header *ctl_hdr(const struct ctl_view *v)
{
	return (struct fp_header *)v->base;
}

/* A consistent copy of worker i's committed counts (fastpath.h, "Crash
 * consistency"): retried while the worker commits over the copy being read. */
static int ctl_counts(const struct ctl_view *v, uint32_t i, struct fp_counts *out)
{
	struct fp_commit *c = &ctl_worker(v, i)->commit;

	for (int tries = 0; tries < 100000; tries++) {
		uint64_t w1 = __atomic_load_n(&c->word, __ATOMIC_ACQUIRE);

		memcpy(out, &c->counts[(w1 >> 1) & 1], sizeof(*out));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if ((__atomic_load_n(&c->word, __ATOMIC_RELAXED) >> 1) == (w1 >> 1))
			return 0;
	}
	return -1;
}

/* Slot i as format() leaves it: every frame on its free list, nothing
 * counted, nothing pending. */
static void ctl_reset_slot(const struct ctl_view *v, uint32_t i)
{
	const struct ctl_lay *h = &v->lay;
	struct fp_worker *wk = ctl_worker(v, i);
	uint64_t *fl = ctl_freelist(v, i);
	uint64_t base = (uint64_t)i * h->frames_per_worker;

	for (uint32_t f = 0; f < h->frames_per_worker; f++)
		fl[f] = (base + h->frames_per_worker - 1 - f) * h->frame_size;
	memset(&wk->commit, 0, sizeof(wk->commit));
	wk->commit.counts[0].frames.free = h->frames_per_worker;
	memset(&wk->ring_use, 0, sizeof(wk->ring_use));
	memset(&wk->usage, 0, sizeof(wk->usage));
	ctl_assign(v, i)->owner = i;	/* alone on its queue until set_worker() */
	ctl_assign(v, i)->n_members = 0;
	ctl_assign(v, i)->n_direct = 0;
	ctl_assign(v, i)->lane = 0;
	ctl_assign(v, i)->xsk_ino = 0;
	wk->heartbeat_ns = 0;
	wk->pid = 0;
	wk->table_generation = 0;
	wk->host = 0;
	wk->asked = 0;
	wk->runner = 0;
	__atomic_store_n(&wk->state, FP_STATE_NONE, __ATOMIC_RELEASE);
}

#endif /* XDPD_LAYOUT_H */
