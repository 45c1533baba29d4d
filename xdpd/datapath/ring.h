/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ring.h: the rings' index discipline.  Owns struct ring (an AF_XDP ring:
 * mapped from a socket, or synthetic, in process memory, for microbench()
 * and fuzz()), its ring_* helpers, the shared handoff rings' hring_*
 * helpers (struct fp_ring, fastpath.h), load_acquire/store_release and
 * now_ns.  Part of _fastpath.c's unity build (first after the system
 * headers).  Must not know a port, a worker, a packet or Python: indices,
 * descriptors and mappings only, and nothing here raises.
 */
#ifndef XDPD_RING_H
#define XDPD_RING_H

#define RING_LEN_SHIFT 48
#define RING_ADDR_MASK ((1ULL << RING_LEN_SHIFT) - 1)
/* A fwd ring entry that is not a packet's last fragment (XDP_PKT_CONTD on
 * the RX descriptor it came from).  Inside the address bits: an entry
 * with it set is an address past every UMEM to a worker without chains. */
#define RING_CONTD (1ULL << 47)

static inline uint32_t load_acquire(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void store_release(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* Producer side (FILL, TX) and consumer side (RX, COMPLETION) share this;
 * cached_* are ours; the producer and consumer words are shared with the
 * kernel. */
struct ring {
	uint32_t *producer;
	uint32_t *consumer;
	uint32_t *flags;
	void *descs;
	uint32_t mask;
	uint32_t size;
	uint32_t cached_prod;
	uint32_t cached_cons;
	void *map;
	size_t map_len;
	bool heap;		/* synthetic: malloc'ed, not mmap'ed */
};

/* Point r at a ring laid out as off says, in the mapping m of len bytes. */
static void ring_setup(struct ring *r, char *m, size_t len, const struct xdp_ring_offset *off,
		       uint32_t size, bool producer)
{
	r->map = m;
	r->map_len = len;
	r->producer = (uint32_t *)(m + off->producer);
	r->consumer = (uint32_t *)(m + off->consumer);
	r->flags = (uint32_t *)(m + off->flags);
	r->descs = m + off->desc;
	r->size = size;
	r->mask = size - 1;
	/* A re-mapped ring (a replaced worker) continues where it was. */
	r->cached_prod = load_acquire(r->producer);
	r->cached_cons = load_acquire(r->consumer);
	if (producer)
		r->cached_cons += size;	/* libxdp's trick: free = cached_cons - cached_prod */
}

static int ring_map(struct ring *r, int fd, const struct xdp_ring_offset *off,
		    uint32_t size, size_t desc_size, off_t pgoff, bool producer)
{
	size_t len = off->desc + (size_t)size * desc_size;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, pgoff);

	if (m == MAP_FAILED)
		return -errno;
	ring_setup(r, m, len, off, size, producer);
	return 0;
}

/*
 * A synthetic ring: process memory laid out like the kernel's (struct
 * xdp_ring in net/xdp/xsk_queue.h: producer, consumer and flags each on a
 * cache line of its own with a padding line between, so the adjacent-line
 * prefetcher does not drag one side's index into the other's cache; the
 * descriptors from byte 320).  These are the offsets XDP_MMAP_OFFSETS
 * reports on x86-64.  Nothing in the kernel ever sets its need_wakeup
 * flag, so a port over synthetic rings never makes a syscall for them.
 * It is a heap block of exactly the ring's length, not a mapping, so that
 * under AddressSanitizer an access past its last descriptor hits a redzone
 * instead of whatever mapping happens to follow.
 */
static const struct xdp_ring_offset synth_ring_off = {
	.producer = 0,
	.consumer = 2 * FP_CACHELINE,
	.flags = 3 * FP_CACHELINE + sizeof(uint32_t),
	.desc = 5 * FP_CACHELINE,
};

static int ring_synth(struct ring *r, uint32_t size, size_t desc_size, bool producer)
{
	size_t len = synth_ring_off.desc + (size_t)size * desc_size;
	void *m;
	int err = posix_memalign(&m, 4096, len);

	if (err)
		return -err;
	memset(m, 0, len);		/* faulted in, as MAP_POPULATE would */
	ring_setup(r, m, len, &synth_ring_off, size, producer);
	r->heap = true;
	return 0;
}

/*
 * A ring a fanout member does not have (FILL, COMPLETION: the owner's):
 * never an entry, never room, its words never written (nothing is ever
 * produced or consumed on it, so no index of it moves).
 */
static uint32_t ring_none_words[3];

static void ring_none(struct ring *r)
{
	memset(r, 0, sizeof(*r));
	r->producer = &ring_none_words[0];
	r->consumer = &ring_none_words[1];
	r->flags = &ring_none_words[2];
}

static void ring_unmap(struct ring *r)
{
	if (r->map && r->heap)
		free(r->map);
	else if (r->map)
		munmap(r->map, r->map_len);
	r->map = NULL;
}

/* producer: free slots, refreshing from the kernel only when short */
static inline uint32_t ring_prod_free(struct ring *r, uint32_t want)
{
	uint32_t free = r->cached_cons - r->cached_prod;

	if (free >= want)
		return free;
	r->cached_cons = load_acquire(r->consumer) + r->size;
	return r->cached_cons - r->cached_prod;
}

static inline void ring_prod_submit(struct ring *r)
{
	store_release(r->producer, r->cached_prod);
}

/* consumer: entries available, refreshing when we ran out */
static inline uint32_t ring_cons_avail(struct ring *r, uint32_t want)
{
	uint32_t avail = r->cached_prod - r->cached_cons;

	if (avail == 0) {
		r->cached_prod = load_acquire(r->producer);
		avail = r->cached_prod - r->cached_cons;
	}
	return avail < want ? avail : want;
}

static inline void ring_cons_release(struct ring *r)
{
	store_release(r->consumer, r->cached_cons);
}

static inline bool ring_needs_wakeup(struct ring *r)
{
	return __atomic_load_n(r->flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP;
}

static inline uint32_t ring_used(const struct ring *r)
{
	return __atomic_load_n(r->producer, __ATOMIC_RELAXED) -
	       __atomic_load_n(r->consumer, __ATOMIC_RELAXED);
}

/* Re-read a ring's shared indices into our cached ones. */
static void ring_resync(struct ring *r, bool producer)
{
	r->cached_prod = load_acquire(r->producer);
	r->cached_cons = load_acquire(r->consumer);
	if (producer)
		r->cached_cons += r->size;
}

/* ---------------------------------------------------------------------- */
/* Shared handoff rings (fastpath.h): same index discipline, our own.      */

static inline uint32_t hring_avail(struct fp_ring *r)
{
	return load_acquire(&r->prod) - __atomic_load_n(&r->cons, __ATOMIC_RELAXED);
}

static inline uint32_t hring_free(struct fp_ring *r, uint32_t entries)
{
	return entries - (__atomic_load_n(&r->prod, __ATOMIC_RELAXED) - load_acquire(&r->cons));
}

#endif /* XDPD_RING_H */
