// SPDX-License-Identifier: GPL-2.0
/*
 * xdpd's per-packet loop, as a small CPython extension.
 *
 * Two objects:
 *   Control  the shared control area (fastpath.h): the supervisor creates and
 *            reads it (counters, frame locations, liveness) and writes the
 *            forwarding tables; a worker maps the same memfd.
 *   Port     a worker's view of its AF_XDP socket: the four rings mapped
 *            from the socket fd it inherited, the UMEM mapped from its
 *            memfd, and the handoff rings to and from the other workers.
 *            Port.run(budget_us) is the fast path: it returns to Python
 *            after at most budget_us, or at once when a signal arrives.
 *
 * One loop iteration (port_step):
 *   1. COMPLETION ring: frames we transmitted.  Our own go on the free
 *      list; a frame homed at another worker goes back on the ret ring.
 *   2. ret rings: our frames that other workers finished transmitting.
 *   3. fwd rings: packets other workers received for us to transmit; moved
 *      to our TX ring (as many as it has room for: the rest waits there).
 *   4. RX ring: up to batch_size packets, each dropped, or rewritten and
 *      forwarded (own TX ring, or the fwd ring of the egress worker).  We
 *      take no more than the egress side has room for, so a full egress
 *      leaves packets in the RX ring (back-pressure) instead of dropping.
 *      With several rules or a match, each packet is parsed and takes the
 *      first rule it fits; room is then checked per packet, on the egress
 *      of its rule (port_receive_rules).
 *   5. TX kick if the TX ring says it needs one (need_wakeup); in copy
 *      mode the kernel transmits in sendto() context.  With busy polling,
 *      a sendto() whenever the kernel has not taken all of the TX ring.
 *   6. FILL ring topped up from the free list; recvfrom() if it needs a
 *      wakeup, or, with busy polling, when the RX ring came up empty.
 *   7. Peers we handed frames to are woken if they sleep.
 * When an iteration moves nothing, the worker sleeps in poll() on its
 * socket (RX) and its eventfd (handoff) instead of spinning, unless
 * configured to spin.  The sleeping flag + eventfd handshake is
 * Dekker-style: the sleeper sets the flag and re-checks its inputs, the
 * producer publishes and then checks the flag, both with full fences, so a
 * wake-up is never lost.
 *
 * microbench() runs the same loop step on synthetic rings (in-process
 * memory laid out like the kernel's, no socket, no syscalls), with a small
 * kernel emulator feeding them: the loop's own cost, in ns per packet.
 * fuzz() runs it on the same rings against a kernel and peers that lie,
 * and kills ports mid-iteration, checking that nothing is lost.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/if_xdp.h>

#include "fastpath.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010	/* Linux 5.1 */
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#define ETH_ALEN 6
#define ETH_HLEN 14
#define RING_LEN_SHIFT 48
#define RING_ADDR_MASK ((1ULL << RING_LEN_SHIFT) - 1)

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

/* ---------------------------------------------------------------------- */
/* Control area layout                                                     */

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
		.ring_stride = h->ring_stride, .total_size = h->total_size,
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
	wk->heartbeat_ns = 0;
	wk->pid = 0;
	wk->table_generation = 0;
	__atomic_store_n(&wk->state, FP_STATE_NONE, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------------------- */
/* Control object                                                          */

typedef struct {
	PyObject_HEAD
	struct ctl_view v;		/* v.base NULL: closed */
	bool laid_out;			/* v.lay known: format(), or the layout given */
	bool writer;			/* the supervisor's: made the tables area */
	int tables_fd;			/* the writer's tables memfd; -1: none */
	uint32_t active;		/* format()'s owner: the active table, 0 or 1 */
	uint64_t generation;		/* ... and its generation */
} ControlObject;

static PyTypeObject ControlType;

static const char *drop_reason_names[FP_DROP__MAX] = {
	[FP_DROP_NO_RULE] = "no_rule",
	[FP_DROP_RULE] = "rule",
	[FP_DROP_INVALID] = "invalid",
	[FP_DROP_EGRESS_DOWN] = "egress_down",
	[FP_DROP_TOO_LONG] = "too_long",
};

static int check_params(const struct ctl_params *p);

static int parse_params(PyObject *args, struct ctl_params *p)
{
	if (!PyArg_ParseTuple(args, "IIII", &p->nworkers, &p->frames_per_worker,
			      &p->frame_size, &p->ring_entries))
		return -1;
	return check_params(p);
}

static int check_params(const struct ctl_params *p)
{
	if (p->nworkers == 0 || p->nworkers > FP_MAX_WORKERS) {
		PyErr_Format(PyExc_ValueError, "nworkers %u out of range 1..%d",
			     p->nworkers, FP_MAX_WORKERS);
		return -1;
	}
	/* The descriptor checks (frame_ok()) find a frame's start by masking
	 * and its home by a range compare: both need a power-of-two frame
	 * size and at least one frame per worker.  A ring entry packs the
	 * length into 16 bits and the address into 48. */
	if (p->frame_size < 2048 || p->frame_size > 32768 ||
	    (p->frame_size & (p->frame_size - 1))) {
		PyErr_Format(PyExc_ValueError,
			     "frame_size %u must be a power of two in 2048..32768", p->frame_size);
		return -1;
	}
	if (p->frames_per_worker == 0) {
		PyErr_SetString(PyExc_ValueError, "frames_per_worker must be positive");
		return -1;
	}
	if ((uint64_t)p->nworkers * p->frames_per_worker * p->frame_size > RING_ADDR_MASK) {
		PyErr_SetString(PyExc_ValueError, "UMEM larger than a ring entry can address (2^48 B)");
		return -1;
	}
	if (p->ring_entries < p->frames_per_worker ||
	    (p->ring_entries & (p->ring_entries - 1))) {
		PyErr_SetString(PyExc_ValueError,
				"ring_entries must be a power of two >= frames_per_worker");
		return -1;
	}
	return 0;
}

/* control_size(nworkers, frames_per_worker, frame_size, ring_entries) */
static PyObject *fp_control_size(PyObject *self, PyObject *args)
{
	struct ctl_params p;
	struct fp_header h = {0};

	if (parse_params(args, &p))
		return NULL;
	return PyLong_FromUnsignedLongLong(ctl_layout(&p, &h));
}

/* The writer's tables area: a memfd of its own, mapped read-write here and
 * then sealed, so that every other mapping of it is read-only for good
 * (fastpath.h). */
static int tables_create(ControlObject *self)
{
	int fd = memfd_create("xdpd-tables", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *mem;

	if (fd < 0)
		goto fail;
	if (ftruncate(fd, TABLES_SIZE))
		goto fail;
	mem = mmap(NULL, TABLES_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		goto fail;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE |
		  F_SEAL_SEAL)) {
		munmap(mem, TABLES_SIZE);
		goto fail;
	}
	self->v.tab = mem;
	self->v.tab->magic = FP_MAGIC;
	self->v.tab->version = FP_VERSION;
	self->tables_fd = fd;
	return 0;
fail:
	PyErr_SetFromErrno(PyExc_OSError);
	if (fd >= 0)
		close(fd);
	return -1;
}

/* A reader's tables area: the writer's memfd, mapped read-only. */
static int tables_map(ControlObject *self, int fd)
{
	struct stat st;
	void *mem;

	if (fstat(fd, &st))
		goto fail;
	if ((uint64_t)st.st_size < TABLES_SIZE) {
		PyErr_Format(PyExc_ValueError, "tables area of %lld bytes, %zu expected",
			     (long long)st.st_size, (size_t)TABLES_SIZE);
		return -1;
	}
	mem = mmap(NULL, TABLES_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		goto fail;
	self->v.tab = mem;
	return 0;
fail:
	PyErr_SetFromErrno(PyExc_OSError);
	return -1;
}

static void ctl_unmap(ControlObject *self)
{
	if (self->v.base)
		munmap(self->v.base, self->v.size);
	self->v.base = NULL;
	if (self->v.tab)
		munmap(self->v.tab, TABLES_SIZE);
	self->v.tab = NULL;
	if (self->tables_fd >= 0)
		close(self->tables_fd);
	self->tables_fd = -1;
}

/* Control(fd, size, layout=None, tables_fd=-1): map the area.
 * The supervisor gives neither layout nor tables_fd: it learns the layout
 * by format() and makes the tables area (its fd: .tables_fd, for the
 * workers).  A worker gives both: layout, a tuple (nworkers,
 * frames_per_worker, frame_size, ring_entries), is how it learns where
 * things are (from its spec, not from the shared header), and it maps the
 * tables area read-only. */
static int Control_init(ControlObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"fd", "size", "layout", "tables_fd", NULL};
	int fd, tables_fd = -1;
	unsigned long long size;
	PyObject *layout = Py_None;
	struct ctl_params p;
	void *mem;

	self->tables_fd = -1;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "iK|Oi", kwlist, &fd, &size, &layout,
					 &tables_fd))
		return -1;
	if (self->v.base) {
		PyErr_SetString(PyExc_ValueError, "control area already mapped");
		return -1;
	}
	if ((layout == Py_None) != (tables_fd < 0)) {
		PyErr_SetString(PyExc_ValueError, "a worker's view needs both layout and "
				"tables_fd; the supervisor's, neither");
		return -1;
	}
	if (layout != Py_None) {
		struct fp_header h = {0};

		if (!PyTuple_Check(layout) || parse_params(layout, &p))
			return -1;
		if (ctl_layout(&p, &h) > size) {
			PyErr_Format(PyExc_ValueError, "control area of %llu bytes too small for "
				     "its layout (%llu)", size, (unsigned long long)h.total_size);
			return -1;
		}
		h.nworkers = p.nworkers;
		h.frames_per_worker = p.frames_per_worker;
		h.frame_size = p.frame_size;
		h.ring_entries = p.ring_entries;
		ctl_lay_of(&self->v.lay, &h);
		self->laid_out = true;
	}
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	self->v.base = mem;
	self->v.size = size;
	self->writer = layout == Py_None;
	if (self->writer ? tables_create(self) : tables_map(self, tables_fd)) {
		ctl_unmap(self);
		return -1;
	}
	return 0;
}

static void Control_dealloc(ControlObject *self)
{
	ctl_unmap(self);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Open, and its layout known (never taken from the shared header). */
static int ctl_check(ControlObject *self)
{
	if (!self->v.base) {
		PyErr_SetString(PyExc_ValueError, "control area is closed");
		return -1;
	}
	if (!self->laid_out) {
		PyErr_SetString(PyExc_ValueError, "control area not initialised: format() it, "
				"or give its layout");
		return -1;
	}
	return 0;
}

/* Open, and the supervisor's: what writes the tables area. */
static int ctl_check_writer(ControlObject *self)
{
	if (self->v.base && !self->writer) {
		PyErr_SetString(PyExc_PermissionError, "a worker's view of the control area "
				"cannot write the tables area");
		return -1;
	}
	return 0;
}

static int ctl_check_worker(ControlObject *self, unsigned int i)
{
	if (ctl_check(self))
		return -1;
	if (i >= self->v.lay.nworkers) {
		PyErr_Format(PyExc_IndexError, "worker %u out of range", i);
		return -1;
	}
	return 0;
}

/* format(nworkers, frames_per_worker, frame_size, ring_entries): lay out a
 * fresh area and give every worker all its frames on its free list. */
static PyObject *Control_format(ControlObject *self, PyObject *args)
{
	struct ctl_params p;
	struct fp_header h = {0};
	uint64_t need;

	if (parse_params(args, &p))
		return NULL;
	if (!self->v.base) {
		PyErr_SetString(PyExc_ValueError, "control area is closed");
		return NULL;
	}
	if (ctl_check_writer(self))
		return NULL;
	need = ctl_layout(&p, &h);
	if (need > self->v.size) {
		PyErr_Format(PyExc_ValueError, "control area too small: %llu < %llu",
			     (unsigned long long)self->v.size, (unsigned long long)need);
		return NULL;
	}
	memset(self->v.base, 0, need);
	h.magic = FP_MAGIC;
	h.version = FP_VERSION;
	h.nworkers = p.nworkers;
	h.frames_per_worker = p.frames_per_worker;
	h.frame_size = p.frame_size;
	h.ring_entries = p.ring_entries;
	ctl_lay_of(&self->v.lay, &h);		/* ours: what we read from now on */
	self->laid_out = true;
	self->active = 0;
	self->generation = 0;
	memcpy(self->v.base, &h, sizeof(h));	/* the record, for tools; never read */
	memset(self->v.tab->assign, 0, sizeof(self->v.tab->assign));
	memset(self->v.tab->table, 0, sizeof(self->v.tab->table));
	self->v.tab->active_table = 0;
	self->v.tab->generation = 0;

	for (uint32_t w = 0; w < p.nworkers; w++)
		ctl_reset_slot(&self->v, w);
	Py_RETURN_NONE;
}

/* seq's items into out: each another worker slot than i (what: the
 * message's start, naming the id, e.g. "member %ld"); -1 with the
 * exception set on the first that is not. */
static int slot_ids(ControlObject *self, PyObject *seq, unsigned int i, const char *what,
		    uint16_t *out)
{
	for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
		long id = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, k));

		if (id < 0 || id >= (long)self->v.lay.nworkers || id == (long)i) {
			if (!PyErr_Occurred()) {
				PyObject *name = PyUnicode_FromFormat(what, id);

				if (name) {
					PyErr_Format(PyExc_ValueError, "%U: not another worker slot",
						     name);
					Py_DECREF(name);
				}
			}
			return -1;
		}
		out[k] = (uint16_t)id;
	}
	return 0;
}

/* set_worker(i, netdev_index, queue, ifindex, lane=queue, owner=i, members=(),
 *            direct=()):
 * before worker i starts.  owner: the worker with the queue's FILL and
 * COMPLETION rings (i itself unless i is a fanout member); members: for an
 * owner, the other workers on its queue (fastpath.h, "Fanout"); direct: the
 * owners of the queues its direct sockets are bound to, by socket
 * ("Direct transmission"). */
static PyObject *Control_set_worker(ControlObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"i", "netdev", "queue", "ifindex", "lane", "owner",
				 "members", "direct", NULL};
	unsigned int i, netdev, queue, ifindex, lane = UINT32_MAX, owner = UINT32_MAX;
	PyObject *members = NULL, *direct = NULL, *seq;
	uint16_t ids[FP_MAX_FANOUT], dids[FP_MAX_DIRECT];
	Py_ssize_t n = 0, nd = 0;
	struct fp_assign *w;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "IIII|IIOO", kwlist, &i, &netdev, &queue,
					 &ifindex, &lane, &owner, &members, &direct))
		return NULL;
	if (ctl_check_worker(self, i) || ctl_check_writer(self))
		return NULL;
	if (netdev >= FP_MAX_NETDEVS)
		return PyErr_Format(PyExc_ValueError, "netdev index %u >= %d", netdev,
				    FP_MAX_NETDEVS);
	if (owner == UINT32_MAX)
		owner = i;
	if (owner >= self->v.lay.nworkers)
		return PyErr_Format(PyExc_ValueError, "owner %u: no such worker slot", owner);
	if (members && members != Py_None) {
		seq = PySequence_Fast(members, "members must be a sequence of worker ids");
		if (!seq)
			return NULL;
		n = PySequence_Fast_GET_SIZE(seq);
		if (n >= FP_MAX_FANOUT || (n && owner != i)) {
			Py_DECREF(seq);
			return PyErr_Format(PyExc_ValueError, "%zd members: only an owner has "
					    "them, at most %d", n, FP_MAX_FANOUT - 1);
		}
		if (slot_ids(self, seq, i, "member %ld", ids)) {
			Py_DECREF(seq);
			return NULL;
		}
		Py_DECREF(seq);
	}
	if (direct && direct != Py_None) {
		seq = PySequence_Fast(direct, "direct must be a sequence of worker ids");
		if (!seq)
			return NULL;
		nd = PySequence_Fast_GET_SIZE(seq);
		if (nd > FP_MAX_DIRECT) {
			Py_DECREF(seq);
			return PyErr_Format(PyExc_ValueError, "%zd direct sockets: at most %d",
					    nd, FP_MAX_DIRECT);
		}
		if (slot_ids(self, seq, i, "direct socket to %ld", dids)) {
			Py_DECREF(seq);
			return NULL;
		}
		Py_DECREF(seq);
	}
	w = ctl_assign(&self->v, i);
	memcpy(w->direct, dids, nd * sizeof(dids[0]));
	w->n_direct = (uint32_t)nd;
	w->netdev = netdev;
	w->queue = queue;
	w->ifindex = ifindex;
	w->lane = lane == UINT32_MAX ? queue : lane;
	w->owner = owner;
	memcpy(w->members, ids, n * sizeof(ids[0]));
	w->n_members = (uint32_t)n;
	Py_RETURN_NONE;
}

static int mac_from_obj(PyObject *o, uint8_t *mac)
{
	char *buf;
	Py_ssize_t len;

	if (o == Py_None)
		return 0;
	if (PyBytes_AsStringAndSize(o, &buf, &len) < 0)
		return -1;
	if (len != ETH_ALEN) {
		PyErr_SetString(PyExc_ValueError, "MAC must be 6 bytes");
		return -1;
	}
	memcpy(mac, buf, ETH_ALEN);
	return 1;
}

/* Fill one rule from a dict:
 *   {"action": "forward"|"drop"|None, "egress": [worker ids],
 *    "match": bytes (struct fp_match)|None, "id": int (index in `forward`),
 *    "set_dst_mac": bytes|None, "set_src_mac": bytes|None, "swap_macs": bool,
 *    "push_vlan": int|None (VLAN id 0..4095), "vlan_proto": int (TPID of the
 *    pushed tag, 0x8100 or 0x88a8; default 0x8100), "pop_vlan": bool,
 *    "max_len": int|None (longest frame the egress takes, after a push or
 *    pop; frames longer are dropped as too_long)} */
static int rule_from_dict(PyObject *d, struct fp_rule *r, uint32_t nworkers)
{
	PyObject *o;
	int set;

	memset(r, 0, sizeof(*r));
	if (d == Py_None)
		return 0;
	if (!PyDict_Check(d)) {
		PyErr_SetString(PyExc_TypeError, "rule must be a dict or None");
		return -1;
	}
	o = PyDict_GetItemString(d, "action");
	if (o && PyUnicode_Check(o)) {
		if (PyUnicode_CompareWithASCIIString(o, "forward") == 0)
			r->action = FP_ACT_FORWARD;
		else if (PyUnicode_CompareWithASCIIString(o, "drop") == 0)
			r->action = FP_ACT_DROP;
		else {
			PyErr_SetString(PyExc_ValueError, "action must be forward or drop");
			return -1;
		}
	}
	o = PyDict_GetItemString(d, "egress");
	if (o) {
		PyObject *seq = PySequence_Fast(o, "egress must be a sequence");
		Py_ssize_t n;

		if (!seq)
			return -1;
		n = PySequence_Fast_GET_SIZE(seq);
		if (n > FP_MAX_EGRESS) {
			Py_DECREF(seq);
			PyErr_SetString(PyExc_ValueError, "too many egress workers");
			return -1;
		}
		for (Py_ssize_t k = 0; k < n; k++) {
			long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, k));

			if (v < 0 || (uint32_t)v >= nworkers) {
				Py_DECREF(seq);
				if (!PyErr_Occurred())
					PyErr_Format(PyExc_ValueError, "egress worker %ld out of range", v);
				return -1;
			}
			r->egress[k] = (uint16_t)v;
		}
		r->n_egress = (uint32_t)n;
		Py_DECREF(seq);
	}
	if (r->action == FP_ACT_FORWARD && r->n_egress == 0) {
		PyErr_SetString(PyExc_ValueError, "forward rule without egress workers");
		return -1;
	}
	o = PyDict_GetItemString(d, "set_dst_mac");
	if (o) {
		if ((set = mac_from_obj(o, r->dst_mac)) < 0)
			return -1;
		if (set)
			r->mac_flags |= FP_MAC_SET_DST;
	}
	o = PyDict_GetItemString(d, "set_src_mac");
	if (o) {
		if ((set = mac_from_obj(o, r->src_mac)) < 0)
			return -1;
		if (set)
			r->mac_flags |= FP_MAC_SET_SRC;
	}
	o = PyDict_GetItemString(d, "swap_macs");
	if (o && PyObject_IsTrue(o))
		r->mac_flags |= FP_MAC_SWAP;
	o = PyDict_GetItemString(d, "push_vlan");
	if (o && o != Py_None) {
		unsigned long v = PyLong_AsUnsignedLong(o), tpid = 0x8100;
		PyObject *proto;

		if (PyErr_Occurred())
			return -1;
		if (v > 4095) {
			PyErr_SetString(PyExc_ValueError, "push_vlan out of range 0..4095");
			return -1;
		}
		proto = PyDict_GetItemString(d, "vlan_proto");
		if (proto && proto != Py_None) {
			tpid = PyLong_AsUnsignedLong(proto);
			if (PyErr_Occurred())
				return -1;
			if (tpid != 0x8100 && tpid != 0x88a8) {
				PyErr_SetString(PyExc_ValueError, "vlan_proto must be 0x8100 or 0x88a8");
				return -1;
			}
		}
		r->vlan_op = FP_VLAN_PUSH;
		r->vlan_tpid = htons((uint16_t)tpid);
		r->vlan_tci = htons((uint16_t)v);
	}
	o = PyDict_GetItemString(d, "pop_vlan");
	if (o && PyObject_IsTrue(o)) {
		if (r->vlan_op == FP_VLAN_PUSH) {
			PyErr_SetString(PyExc_ValueError, "push_vlan and pop_vlan in one rule");
			return -1;
		}
		r->vlan_op = FP_VLAN_POP;
	}
	if (r->vlan_op != FP_VLAN_NONE && r->action != FP_ACT_FORWARD) {
		PyErr_SetString(PyExc_ValueError, "push_vlan/pop_vlan on a rule that does not forward");
		return -1;
	}
	o = PyDict_GetItemString(d, "match");
	if (o && o != Py_None) {
		char *buf;
		Py_ssize_t len;

		if (PyBytes_AsStringAndSize(o, &buf, &len) < 0)
			return -1;
		if (len != sizeof(r->match)) {
			PyErr_Format(PyExc_ValueError, "match must be %zu bytes", sizeof(r->match));
			return -1;
		}
		memcpy(&r->match, buf, sizeof(r->match));
	}
	o = PyDict_GetItemString(d, "id");
	if (o && o != Py_None) {
		unsigned long v = PyLong_AsUnsignedLong(o);

		if (PyErr_Occurred())
			return -1;
		r->id = (uint32_t)v;
	}
	o = PyDict_GetItemString(d, "max_len");
	if (o && o != Py_None) {
		unsigned long v = PyLong_AsUnsignedLong(o);

		if (PyErr_Occurred())
			return -1;
		if (v > UINT32_MAX) {
			PyErr_SetString(PyExc_ValueError, "max_len out of range");
			return -1;
		}
		r->max_len = (uint32_t)v;
	}
	return 0;
}

/* A netdev's rules: None (none), one rule dict, or a list of at most
 * FP_MAX_RULES rule dicts, tried in order. */
static int netdev_from_obj(PyObject *o, struct fp_netdev *nd, uint32_t nworkers)
{
	PyObject *seq;
	Py_ssize_t n;

	memset(nd, 0, sizeof(*nd));
	if (o == Py_None)
		return 0;
	if (PyDict_Check(o)) {
		nd->n_rules = 1;
		return rule_from_dict(o, &nd->rules[0], nworkers);
	}
	seq = PySequence_Fast(o, "a netdev's rules must be a dict, a list of dicts or None");
	if (!seq)
		return -1;
	n = PySequence_Fast_GET_SIZE(seq);
	if (n > FP_MAX_RULES) {
		Py_DECREF(seq);
		PyErr_Format(PyExc_ValueError, "at most %d rules per netdev", FP_MAX_RULES);
		return -1;
	}
	for (Py_ssize_t k = 0; k < n; k++) {
		PyObject *d = PySequence_Fast_GET_ITEM(seq, k);

		if (!PyDict_Check(d)) {
			Py_DECREF(seq);
			PyErr_SetString(PyExc_TypeError, "rule must be a dict");
			return -1;
		}
		if (rule_from_dict(d, &nd->rules[k], nworkers)) {
			Py_DECREF(seq);
			return -1;
		}
	}
	nd->n_rules = (uint32_t)n;
	Py_DECREF(seq);
	return 0;
}

/* write_table(rules: list indexed by netdev, each None, a rule dict or a
 * list of rule dicts, complete_checksums=()) -> generation
 * complete_checksums: the netdev indexes whose frames may carry partial
 * checksums, to be completed (FP_NETDEV_CSUM_COMPLETE).
 * Writes the inactive table, then makes it the active one.  Workers switch
 * between two iterations; the caller must not write again until every
 * running worker reports the new generation (table_generation). */
static PyObject *Control_write_table(ControlObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"rules", "complete_checksums", "direct_ok", NULL};
	PyObject *rules, *seq, *csum = NULL, *dok = NULL;
	uint32_t csum_flags[FP_MAX_NETDEVS] = {0};
	uint8_t direct_ok[FP_MAX_WORKERS] = {0};
	struct fp_table *t;
	uint32_t next;
	Py_ssize_t n;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO", kwlist, &rules, &csum, &dok))
		return NULL;
	if (dok && dok != Py_None) {
		PyObject *key, *value;
		Py_ssize_t pos = 0;

		if (!PyDict_Check(dok))
			return PyErr_Format(PyExc_TypeError, "direct_ok must be a dict "
					    "{worker slot: bits}");
		while (PyDict_Next(dok, &pos, &key, &value)) {
			long w = PyLong_AsLong(key), bits = PyLong_AsLong(value);

			if (PyErr_Occurred())
				return NULL;
			if (w < 0 || w >= (long)self->v.lay.nworkers || bits < 0 || bits > 0xff)
				return PyErr_Format(PyExc_ValueError, "direct_ok: slot %ld bits "
						    "%ld out of range", w, bits);
			direct_ok[w] = (uint8_t)bits;
		}
	}
	if (csum && csum != Py_None) {
		PyObject *cs = PySequence_Fast(csum, "complete_checksums must be a sequence "
					       "of netdev indexes");

		if (!cs)
			return NULL;
		for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(cs); k++) {
			long nd = PyLong_AsLong(PySequence_Fast_GET_ITEM(cs, k));

			if (nd < 0 || nd >= FP_MAX_NETDEVS) {
				Py_DECREF(cs);
				if (!PyErr_Occurred())
					PyErr_Format(PyExc_ValueError, "netdev index %ld out of "
						     "range 0..%d", nd, FP_MAX_NETDEVS - 1);
				return NULL;
			}
			csum_flags[nd] = FP_NETDEV_CSUM_COMPLETE;
		}
		Py_DECREF(cs);
	}
	if (ctl_check(self) || ctl_check_writer(self))
		return NULL;
	seq = PySequence_Fast(rules, "rules must be a sequence");
	if (!seq)
		return NULL;
	n = PySequence_Fast_GET_SIZE(seq);
	if (n > FP_MAX_NETDEVS) {
		Py_DECREF(seq);
		return PyErr_Format(PyExc_ValueError, "at most %d netdevs", FP_MAX_NETDEVS);
	}
	/* which table is active, and its generation, are ours (kept here,
	 * never read back from the area) */
	next = self->active ^ 1;
	t = ctl_table(&self->v, next);
	memset(t, 0, sizeof(*t));
	for (Py_ssize_t i = 0; i < n; i++) {
		if (netdev_from_obj(PySequence_Fast_GET_ITEM(seq, i), &t->by_netdev[i],
				    self->v.lay.nworkers)) {
			Py_DECREF(seq);
			return NULL;
		}
		t->by_netdev[i].flags = csum_flags[i];
	}
	Py_DECREF(seq);
	t->n_netdevs = (uint32_t)n;
	memcpy(t->direct_ok, direct_ok, sizeof(t->direct_ok));
	t->generation = ++self->generation;
	self->active = next;
	__atomic_store_n(&self->v.tab->generation, t->generation, __ATOMIC_RELEASE);
	__atomic_store_n(&self->v.tab->active_table, next, __ATOMIC_RELEASE);
	return PyLong_FromUnsignedLongLong(t->generation);
}

/* A worker's counters as the dict worker_stats() returns. */
static PyObject *stats_dict(const struct fp_stats *s)
{
	PyObject *drops = PyDict_New();

	if (!drops)
		return NULL;
	for (int r = 0; r < FP_DROP__MAX; r++) {
		PyObject *v = PyLong_FromUnsignedLongLong(s->drops[r]);

		if (!v || PyDict_SetItemString(drops, drop_reason_names[r], v)) {
			Py_XDECREF(v);
			Py_DECREF(drops);
			return NULL;
		}
		Py_DECREF(v);
	}
	PyObject *dp = PyTuple_New(FP_MAX_DIRECT), *db = PyTuple_New(FP_MAX_DIRECT);

	if (!dp || !db) {
		Py_XDECREF(dp);
		Py_XDECREF(db);
		Py_DECREF(drops);
		return NULL;
	}
	for (int j = 0; j < FP_MAX_DIRECT; j++) {
		PyTuple_SET_ITEM(dp, j, PyLong_FromUnsignedLongLong(s->direct_packets[j]));
		PyTuple_SET_ITEM(db, j, PyLong_FromUnsignedLongLong(s->direct_bytes[j]));
	}
	if (PyErr_Occurred()) {
		Py_DECREF(dp);
		Py_DECREF(db);
		Py_DECREF(drops);
		return NULL;
	}
	return Py_BuildValue("{sKsKsKsKsNsKsKsKsKsKsKsKsKsKsKsNsN}",
			     "rx_packets", s->rx_packets, "rx_bytes", s->rx_bytes,
			     "tx_packets", s->tx_packets, "tx_bytes", s->tx_bytes,
			     "drops", drops,
			     "handoff_out", s->handoff_out, "handoff_in", s->handoff_in,
			     "tx_kicks", s->tx_kicks, "fill_kicks", s->fill_kicks,
			     "sleeps", s->sleeps, "loops", s->loops, "busy_loops", s->busy_loops,
			     "busy_polls", s->busy_polls, "bad_descs", s->bad_descs,
			     "csum_completed", s->csum_completed,
			     "direct_packets", dp, "direct_bytes", db);
}

static PyObject *Control_worker_stats(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_counts c;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	if (ctl_counts(&self->v, i, &c))
		return PyErr_Format(PyExc_TimeoutError, "worker %u counters kept changing", i);
	return stats_dict(&c.stats);
}

/* rule_stats(i) -> (packets, bytes): lists of FP_MAX_RULES counters, by
 * position in worker i's netdev's rule list (one consistent set). */
static PyObject *Control_rule_stats(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_counts c;
	PyObject *pk, *by;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	if (ctl_counts(&self->v, i, &c))
		return PyErr_Format(PyExc_TimeoutError, "worker %u counters kept changing", i);
	pk = PyList_New(FP_MAX_RULES);
	by = PyList_New(FP_MAX_RULES);
	if (!pk || !by)
		goto fail;
	for (int k = 0; k < FP_MAX_RULES; k++) {
		PyObject *a = PyLong_FromUnsignedLongLong(c.stats.rule_packets[k]);
		PyObject *b = PyLong_FromUnsignedLongLong(c.stats.rule_bytes[k]);

		if (!a || !b) {
			Py_XDECREF(a);
			Py_XDECREF(b);
			goto fail;
		}
		PyList_SET_ITEM(pk, k, a);
		PyList_SET_ITEM(by, k, b);
	}
	return Py_BuildValue("(NN)", pk, by);
fail:
	Py_XDECREF(pk);
	Py_XDECREF(by);
	return NULL;
}

/* worker_frames(i) -> {"free", "rx", "tx", "handoff"}: one consistent set. */
static PyObject *Control_worker_frames(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_counts c;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	if (ctl_counts(&self->v, i, &c))
		return PyErr_Format(PyExc_TimeoutError, "worker %u frame counts kept changing", i);
	return Py_BuildValue("{sKsKsKsK}", "free", c.frames.free, "rx", c.frames.rx,
			     "tx", c.frames.tx, "handoff", c.frames.handoff);
}

/* worker_liveness(i) -> (heartbeat_ns, pid, state, table_generation) */
static PyObject *Control_worker_liveness(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_worker *w;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	w = ctl_worker(&self->v, i);
	return Py_BuildValue("KIIK",
			     (unsigned long long)__atomic_load_n(&w->heartbeat_ns, __ATOMIC_RELAXED),
			     __atomic_load_n(&w->pid, __ATOMIC_RELAXED),
			     __atomic_load_n(&w->state, __ATOMIC_RELAXED),
			     (unsigned long long)__atomic_load_n(&w->table_generation,
								 __ATOMIC_RELAXED));
}

/* usage(i) -> {"pid", "user_ns", "system_ns", "rss_bytes", "uss_bytes"}:
 * what the worker in slot i last reported of itself; pid 0: nothing yet */
static PyObject *Control_usage(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_usage *u;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	u = &ctl_worker(&self->v, i)->usage;
	return Py_BuildValue("{sIsKsKsKsK}", "pid", __atomic_load_n(&u->pid, __ATOMIC_RELAXED),
		"user_ns", (unsigned long long)__atomic_load_n(&u->user_ns, __ATOMIC_RELAXED),
		"system_ns", (unsigned long long)__atomic_load_n(&u->system_ns, __ATOMIC_RELAXED),
		"rss_bytes", (unsigned long long)__atomic_load_n(&u->rss_bytes, __ATOMIC_RELAXED),
		"uss_bytes", (unsigned long long)__atomic_load_n(&u->uss_bytes, __ATOMIC_RELAXED));
}

static inline uint32_t hring_avail(struct fp_ring *r);

/* ring_use(i) -> {"rx", "tx", "fill", "completion"}: entries on each ring */
static PyObject *Control_ring_use(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_ring_use *u;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	u = &ctl_worker(&self->v, i)->ring_use;
	return Py_BuildValue("{sIsIsIsI}", "rx", __atomic_load_n(&u->rx, __ATOMIC_RELAXED),
			     "tx", __atomic_load_n(&u->tx, __ATOMIC_RELAXED),
			     "fill", __atomic_load_n(&u->fill, __ATOMIC_RELAXED),
			     "completion", __atomic_load_n(&u->comp, __ATOMIC_RELAXED));
}

/*
 * reset_worker(i): give slot i back, as format() left it: all its frames
 * on its free list, counters and liveness zeroed.  Only for a slot whose
 * worker has exited and whose socket is closed (so the kernel holds none
 * of its frames); refused while any frame of it is lent out or any ring to
 * or from it holds entries, since those would then be owned twice.
 */
static PyObject *Control_reset_worker(ControlObject *self, PyObject *args)
{
	unsigned int i;
	const struct ctl_view *v = &self->v;
	struct fp_counts c;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i) ||
	    ctl_check_writer(self))
		return NULL;
	if (ctl_counts(v, i, &c))
		return PyErr_Format(PyExc_TimeoutError, "worker %u frame counts kept changing", i);
	if (c.frames.handoff)
		return PyErr_Format(PyExc_ValueError, "worker %u still has %llu frames lent out",
				    i, (unsigned long long)c.frames.handoff);
	for (uint32_t w = 0; w < v->lay.nworkers; w++) {
		for (int ret = 0; ret < 2; ret++) {
			if (w != i && (hring_avail(ctl_ring(v, ret, w, i)) ||
				       hring_avail(ctl_ring(v, ret, i, w))))
				return PyErr_Format(PyExc_ValueError,
						    "worker %u: %s ring with worker %u not empty",
						    i, ret ? "return" : "handoff", w);
		}
	}
	ctl_reset_slot(v, i);
	Py_RETURN_NONE;
}

/* mark_stopped(i): slot i's worker is gone for good (given up): peers
 * stop handing it packets and count them as egress_down. */
static PyObject *Control_mark_stopped(ControlObject *self, PyObject *args)
{
	unsigned int i;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	__atomic_store_n(&ctl_worker(&self->v, i)->state, FP_STATE_STOPPED, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

static PyObject *Control_generation(ControlObject *self, PyObject *noargs)
{
	if (ctl_check(self))
		return NULL;
	return PyLong_FromUnsignedLongLong(self->generation);
}

static PyObject *Control_close(ControlObject *self, PyObject *noargs)
{
	ctl_unmap(self);
	Py_RETURN_NONE;
}

static PyObject *Control_get_tables_fd(ControlObject *self, void *closure)
{
	return PyLong_FromLong(self->tables_fd);
}

static PyGetSetDef Control_getset[] = {
	{"tables_fd", (getter)Control_get_tables_fd, NULL,
	 "the tables area's memfd (the supervisor's view; -1 in a worker's): "
	 "sealed, any mapping of it but ours is read-only", NULL},
	{NULL},
};

static PyMethodDef Control_methods[] = {
	{"format", (PyCFunction)Control_format, METH_VARARGS,
	 "format(nworkers, frames_per_worker, frame_size, ring_entries)"},
	{"set_worker", (PyCFunction)(void (*)(void))Control_set_worker,
	 METH_VARARGS | METH_KEYWORDS,
	 "set_worker(i, netdev, queue, ifindex, lane=queue, owner=i, members=())"},
	{"write_table", (PyCFunction)(void (*)(void))Control_write_table,
	 METH_VARARGS | METH_KEYWORDS,
	 "write_table(rules_by_netdev, complete_checksums=()) -> generation"},
	{"worker_stats", (PyCFunction)Control_worker_stats, METH_VARARGS, NULL},
	{"worker_frames", (PyCFunction)Control_worker_frames, METH_VARARGS, NULL},
	{"rule_stats", (PyCFunction)Control_rule_stats, METH_VARARGS,
	 "rule_stats(i) -> (packets, bytes) by position in the netdev's rule list"},
	{"worker_liveness", (PyCFunction)Control_worker_liveness, METH_VARARGS, NULL},
	{"generation", (PyCFunction)Control_generation, METH_NOARGS, NULL},
	{"ring_use", (PyCFunction)Control_ring_use, METH_VARARGS,
	 "ring_use(i) -> entries on the rx, tx, fill and completion rings"},
	{"usage", (PyCFunction)Control_usage, METH_VARARGS,
	 "usage(i) -> the CPU time and memory the worker in slot i last reported"},
	{"reset_worker", (PyCFunction)Control_reset_worker, METH_VARARGS,
	 "reset_worker(i): give a drained, exited worker's slot back"},
	{"mark_stopped", (PyCFunction)Control_mark_stopped, METH_VARARGS,
	 "mark_stopped(i): a worker given up on: peers drop its packets as egress_down"},
	{"close", (PyCFunction)Control_close, METH_NOARGS, NULL},
	{NULL}
};

static PyTypeObject ControlType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "xdpd.datapath._fastpath.Control",
	.tp_basicsize = sizeof(ControlObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Control(fd, size): the shared control area, mapped",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Control_init,
	.tp_dealloc = (destructor)Control_dealloc,
	.tp_methods = Control_methods,
	.tp_getset = Control_getset,
};

/* ---------------------------------------------------------------------- */
/* AF_XDP rings                                                            */

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

/* ---------------------------------------------------------------------- */
/* Port object                                                             */

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
	uint64_t members_sent;		/* owner: its members' tx_packets, last sync */
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
	/* counters kept locally, published once per iteration */
	struct fp_stats st;
} PortObject;

static PyTypeObject PortType;

static void port_unmap(PortObject *p)
{
	ring_unmap(&p->rx);
	ring_unmap(&p->tx);
	ring_unmap(&p->fill);
	ring_unmap(&p->comp);
	for (uint32_t j = 0; j < p->n_direct; j++)
		ring_unmap(&p->direct[j].tx);	/* the fds are the caller's */
	p->n_direct = 0;
	PyMem_Free(p->dsrc);
	PyMem_Free(p->dsrc_of);
	p->dsrc = NULL;
	p->dsrc_of = NULL;
	p->n_dsrc = 0;
	if (p->umem)
		munmap(p->umem, p->umem_size);
	p->umem = NULL;
	PyMem_Free(p->peer_efd);
	PyMem_Free(p->fwd_in);
	PyMem_Free(p->wake);
	PyMem_Free(p->ret_pending);
	PyMem_Free(p->fwd_pending);
	p->ret_pending = NULL;
	p->fwd_pending = NULL;
	p->peer_efd = NULL;
	p->fwd_in = NULL;
	p->wake = NULL;
}

static void Port_dealloc(PortObject *p)
{
	port_unmap(p);
	Py_XDECREF(p->control);
	Py_TYPE(p)->tp_free((PyObject *)p);
}

static inline uint32_t ring_used(const struct ring *r)
{
	return __atomic_load_n(r->producer, __ATOMIC_RELAXED) -
	       __atomic_load_n(r->consumer, __ATOMIC_RELAXED);
}

/* For the metrics only: entries on each ring, producer minus consumer. */
static void rings_publish(PortObject *p)
{
	struct fp_ring_use *u = &p->me->ring_use;

	__atomic_store_n(&u->rx, ring_used(&p->rx), __ATOMIC_RELAXED);
	__atomic_store_n(&u->tx, ring_used(&p->tx), __ATOMIC_RELAXED);
	__atomic_store_n(&u->fill, ring_used(&p->fill), __ATOMIC_RELAXED);
	__atomic_store_n(&u->comp, ring_used(&p->comp), __ATOMIC_RELAXED);
}

/* Which word a redo log entry sets; NULL for an entry that names none. */
static uint32_t *redo_word(PortObject *p, const struct fp_redo *e)
{
	if (e->word == FP_REDO_DIRECT_PROD)
		return e->peer < p->n_direct && p->direct[e->peer].open ?
		       p->direct[e->peer].tx.producer : NULL;
	if (e->peer >= p->nworkers)
		return NULL;
	switch (e->word) {
	case FP_REDO_FILL_PROD:		return p->fill.producer;
	case FP_REDO_RX_CONS:		return p->rx.consumer;
	case FP_REDO_TX_PROD:		return p->tx.producer;
	case FP_REDO_COMP_CONS:		return p->comp.consumer;
	case FP_REDO_FWD_OUT_PROD:	return &p->fwd_out[e->peer]->prod;
	case FP_REDO_RET_OUT_PROD:	return &p->ret_out[e->peer]->prod;
	case FP_REDO_FWD_IN_CONS:	return &p->fwd_in[e->peer]->cons;
	case FP_REDO_RET_IN_CONS:	return &p->ret_in[e->peer]->cons;
	}
	return NULL;
}

static inline void redo_note(PortObject *p, uint16_t word, uint32_t peer, uint32_t value)
{
	p->redo[p->redo_len++] = (struct fp_redo){ .word = word, .peer = (uint16_t)peer,
						   .value = value };
}

static void redo_apply(PortObject *p, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++) {
		uint32_t *w = redo_word(p, &p->redo[i]);

		if (w)
			store_release(w, p->redo[i].value);
	}
}

/* A kernel ring index we moved since the last commit goes into the log. */
static inline void redo_note_ring(PortObject *p, uint16_t word, uint32_t *shared, uint32_t ours)
{
	if (__atomic_load_n(shared, __ATOMIC_RELAXED) != ours)
		redo_note(p, word, 0, ours);
}

/*
 * The end of an iteration (fastpath.h, "Crash consistency"): counts and
 * counters into the spare half of the commit record, every index this
 * iteration moved into the redo log, the commit point (port_commit_begin),
 * then the indices published (port_commit_end).  Nothing the iteration
 * did is visible to the kernel or a peer before the commit point.  Two
 * halves only so that fuzz() can kill a port between them.
 */
static inline void port_commit_begin(PortObject *p)
{
	struct fp_commit *c = &p->me->commit;
	uint64_t seq = (c->word >> 1) + 1;	/* we are the only writer */
	struct fp_counts *k = &c->counts[seq & 1];

	for (uint32_t w = 0; w < p->nworkers; w++) {
		if (p->ret_pending[w]) {
			redo_note(p, FP_REDO_RET_OUT_PROD, w,
				  p->ret_out[w]->prod + p->ret_pending[w]);
			p->ret_pending[w] = 0;
		}
	}
	redo_note_ring(p, FP_REDO_FILL_PROD, p->fill.producer, p->fill.cached_prod);
	redo_note_ring(p, FP_REDO_RX_CONS, p->rx.consumer, p->rx.cached_cons);
	redo_note_ring(p, FP_REDO_TX_PROD, p->tx.producer, p->tx.cached_prod);
	redo_note_ring(p, FP_REDO_COMP_CONS, p->comp.consumer, p->comp.cached_cons);
	for (uint32_t j = 0; j < p->n_direct; j++) {
		struct ring *r = &p->direct[j].tx;

		if (p->direct[j].open &&
		    __atomic_load_n(r->producer, __ATOMIC_RELAXED) != r->cached_prod)
			redo_note(p, FP_REDO_DIRECT_PROD, j, r->cached_prod);
	}

	k->frames.free = p->n_free;
	k->frames.rx = p->n_rx;
	k->frames.tx = p->n_tx;
	k->frames.handoff = p->n_handoff;
	memcpy(&k->stats, &p->st, sizeof(p->st));
	k->fanout = p->fan;
	c->log_len = p->redo_len;
	__atomic_store_n(&c->word, seq << 1 | 1, __ATOMIC_RELEASE);	/* commit point */
}

static inline void port_commit_end(PortObject *p)
{
	struct fp_commit *c = &p->me->commit;

	redo_apply(p, p->redo_len);
	__atomic_store_n(&c->word, c->word & ~1ULL, __ATOMIC_RELEASE);
	p->redo_len = 0;
}

static void port_commit(PortObject *p)
{
	port_commit_begin(p);
	port_commit_end(p);
}

/* FNV-1a over what makes a rule list the same list for its counters:
 * every rule but its egress workers (those move with reloads that add or
 * remove queues; the rule stays the rule). */
static uint64_t rules_sig(const struct fp_rule *rules, uint32_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ n;

	for (uint32_t k = 0; k < n; k++) {
		const uint8_t *b = (const uint8_t *)&rules[k];

		for (size_t i = 0; i < offsetof(struct fp_rule, n_egress); i++)
			h = (h ^ b[i]) * 0x100000001b3ULL;
	}
	return h;
}

/*
 * Direct transmission.  A packet forwarded to another worker's queue costs
 * two wake-ups when it goes over the fwd ring: ours, then the egress
 * worker's (its eventfd), and the two processes take turns on the CPUs.
 * So a worker also holds TX-only sockets of its own on the egress queues
 * its rules send to (fp_assign.direct: the supervisor binds them with
 * XDP_SHARED_UMEM to the queue's socket, so they share its FILL and
 * COMPLETION rings), and puts such packets on that TX ring itself.  The
 * frame is lent exactly as over a fwd ring (handoff, until it is back):
 * the kernel completes it on the egress owner's COMPLETION ring, and the
 * owner gives it back by address on its ret ring, as it does for frames
 * it sent for others.  The egress worker is not woken for the packet; it
 * collects the completions when it next runs, and is woken for them only
 * when we need our frames (over a quarter of them out on one socket) or
 * found after a nap that nothing came back.  Counted per socket:
 * direct_packets and direct_returned (the frames that owner's ret ring
 * gave back), so the owner (draining, or deciding how long to sleep) can
 * tell what is still out on its queue, and the supervisor counts the
 * packets as the egress netdev's.  Only workers outside fanout groups
 * send directly (a group's frames are lent by several workers, and the
 * returns could not be told apart), and a worker never hands packets for
 * a queue it sends to directly over the fwd ring while the table allows
 * the socket: a socket the table no longer allows (its queue removed) is
 * closed once nothing of it is out (direct_retire()).
 */
static void direct_load(PortObject *p, const struct fp_table *t)
{
	uint8_t ok = __atomic_load_n(&t->direct_ok[p->id], __ATOMIC_RELAXED);
	uint32_t n = p->nworkers, cap = n * FP_MAX_DIRECT;

	for (uint32_t j = 0; j < p->n_direct; j++)
		p->direct[j].ok = p->direct[j].open && (ok >> j & 1);
	p->egress_direct = -1;
	for (uint32_t k = 0; k < FP_MAX_RULES; k++)
		p->rule_direct[k] = -1;
	for (uint32_t j = 0; j < p->n_direct; j++) {
		if (!p->direct[j].ok)
			continue;
		for (uint32_t k = 0; k < p->n_rules; k++) {
			uint32_t e = p->rule_egress[k], o;

			if (e == p->id || e >= n || p->rules[k].action != FP_ACT_FORWARD)
				continue;
			o = __atomic_load_n(&ctl_assign(p->v, e)->owner, __ATOMIC_RELAXED);
			if ((o < n ? o : e) == p->direct[j].owner)
				p->rule_direct[k] = (int)j;
		}
	}
	if (p->n_rules)
		p->egress_direct = p->rule_direct[0];
	/* as an egress owner: who sends on our queue directly (as each
	 * decides in direct_open(): workers outside fanout groups) */
	if (!p->dsrc)
		p->dsrc = PyMem_Calloc(cap, sizeof(*p->dsrc));
	if (!p->dsrc_of)
		p->dsrc_of = PyMem_Calloc(n, 1);
	p->n_dsrc = 0;
	if (!p->dsrc || !p->dsrc_of || p->member)
		return;
	memset(p->dsrc_of, 0, n);
	for (uint32_t w = 0; w < n; w++) {
		const struct fp_assign *a = ctl_assign(p->v, w);
		uint32_t nd = a->n_direct < FP_MAX_DIRECT ? a->n_direct : FP_MAX_DIRECT;

		if (w == p->id || a->owner != w || a->n_members)
			continue;
		for (uint32_t j = 0; j < nd && p->n_dsrc < cap; j++) {
			if (a->direct[j] == p->id) {
				p->dsrc[p->n_dsrc++] = (struct direct_src){ .w = (uint16_t)w,
									   .j = (uint16_t)j };
				p->dsrc_of[w] = 1;
			}
		}
	}
}

/* Frames of ours still out on direct socket j (sent, not yet given back). */
static inline uint64_t direct_out(const struct fp_stats *st, uint32_t j)
{
	return st->direct_packets[j] > st->direct_returned[j] ?
	       st->direct_packets[j] - st->direct_returned[j] : 0;
}

/* A packet onto direct socket j's TX ring (room checked by the caller):
 * the frame is lent, as over a fwd ring, until its owner gives it back. */
static inline void direct_put(PortObject *p, uint32_t j, uint64_t addr, uint32_t len)
{
	struct ring *tx = &p->direct[j].tx;
	struct xdp_desc *t = &((struct xdp_desc *)tx->descs)[tx->cached_prod++ & tx->mask];

	t->addr = addr;
	t->len = len;
	t->options = 0;
	p->n_handoff++;
	p->st.direct_packets[j]++;
	p->st.direct_bytes[j] += len;
}

/* After putting packets on direct socket j: its owner collects the
 * completions when it next runs; woken now only if we need our frames. */
static inline void direct_sent(PortObject *p, uint32_t j)
{
	p->direct_woken &= (uint8_t)~(1U << j);
	if (direct_out(&p->st, j) > p->fpw / 4)
		p->wake[p->direct[j].owner] = 1;
}

/*
 * Worker w sends out of our own queue's fanout group (or is us).  We send
 * such packets ourselves: every socket of the group transmits on the same
 * queue, and a frame of the owner's may only complete on the owner's
 * COMPLETION ring as one the group sent as its own (fastpath.h, "Fanout"),
 * never as one lent inside the group.
 */
static inline bool same_group(PortObject *p, uint32_t w)
{
	return w == p->id || (w < p->nworkers &&
			      __atomic_load_n(&ctl_assign(p->v, w)->owner, __ATOMIC_RELAXED) ==
			      p->owner);
}

/*
 * The rules for our netdev, copied out of the active table.  The table is
 * in memory every worker can write, so its numbers are bounded before
 * they index anything: a count past its array stops at the array, an
 * egress that names no worker makes the rule's packets egress_down
 * (egress_running()).  Only when the generation moves: not per packet.
 * A netdev with no rule, or one rule without a match (the common case),
 * takes port_receive's path that parses nothing; anything else, and any
 * rule that pushes or pops a VLAN tag (the packet's address and length
 * change: kept off the common path), is classified packet by packet
 * (port_receive_rules).  The rule counters
 * start again from zero when the list differs from the one they count
 * for (a replacement worker continues them: rule_sig is committed).
 */
static void port_load_rule(PortObject *p)
{
	uint32_t which = __atomic_load_n(&p->tab->active_table, __ATOMIC_ACQUIRE) & 1;
	struct fp_table *t = ctl_table(p->v, which);
	const struct fp_assign *me = ctl_assign(p->v, p->id);
	uint32_t netdev = me->netdev, lane = me->lane;
	uint64_t sig;

	p->generation = __atomic_load_n(&t->generation, __ATOMIC_ACQUIRE);
	p->n_rules = 0;
	p->csum = false;
	if (netdev < t->n_netdevs && netdev < FP_MAX_NETDEVS) {
		struct fp_netdev *nd = &t->by_netdev[netdev];

		p->csum = nd->flags & FP_NETDEV_CSUM_COMPLETE;
		p->n_rules = __atomic_load_n(&nd->n_rules, __ATOMIC_RELAXED);
		if (p->n_rules > FP_MAX_RULES)
			p->n_rules = FP_MAX_RULES;
		memcpy(p->rules, nd->rules, p->n_rules * sizeof(p->rules[0]));
	}
	p->classify = false;
	for (uint32_t k = 0; k < p->n_rules; k++) {
		struct fp_rule *r = &p->rules[k];

		if (r->vlan_op != FP_VLAN_NONE)
			p->classify = true;
		if (r->n_egress > FP_MAX_EGRESS)
			r->n_egress = FP_MAX_EGRESS;
		p->rule_egress[k] = p->id;
		if (r->action == FP_ACT_FORWARD && r->n_egress)
			p->rule_egress[k] = same_group(p, r->egress[lane % r->n_egress]) ?
					    p->id : r->egress[lane % r->n_egress];
	}
	if (p->n_rules)
		memcpy(&p->rule, &p->rules[0], sizeof(p->rule));
	else
		memset(&p->rule, 0, sizeof(p->rule));
	p->egress = p->n_rules ? p->rule_egress[0] : p->id;
	direct_load(p, t);
	p->parse = p->n_rules > 1 || (p->n_rules == 1 && p->rule.match.fields);
	p->classify = p->classify || p->parse;
	sig = rules_sig(p->rules, p->n_rules);
	if (sig != p->st.rule_sig) {
		p->st.rule_sig = sig;
		memset(p->st.rule_packets, 0, sizeof(p->st.rule_packets));
		memset(p->st.rule_bytes, 0, sizeof(p->st.rule_bytes));
	}
	__atomic_store_n(&p->me->table_generation, p->generation, __ATOMIC_RELEASE);
}

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

/* A received frame we let go of (a drop): our free list, or, for a fanout
 * member, back to the owner whose frame it is. */
static inline void ret_push(PortObject *p, uint32_t home, uint64_t addr);

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

static inline void rewrite_macs(const struct fp_rule *r, uint8_t *pkt)
{
	uint32_t f = r->mac_flags;

	if (f & FP_MAC_SWAP) {
		uint8_t tmp[ETH_ALEN];

		memcpy(tmp, pkt, ETH_ALEN);
		memcpy(pkt, pkt + ETH_ALEN, ETH_ALEN);
		memcpy(pkt + ETH_ALEN, tmp, ETH_ALEN);
		return;
	}
	if (f & FP_MAC_SET_DST)
		memcpy(pkt, r->dst_mac, ETH_ALEN);
	if (f & FP_MAC_SET_SRC)
		memcpy(pkt + ETH_ALEN, r->src_mac, ETH_ALEN);
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
			uint64_t n = __atomic_load_n(&m->stats.tx_packets, __ATOMIC_RELAXED);

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
	uint64_t sent = p->st.tx_packets + p->members_sent;

	if (p->member)
		return p->tx.cached_prod - load_acquire(p->tx.consumer);
	return sent > p->fan.completed ? sent - p->fan.completed : 0;
}

/* 1. our COMPLETION ring */
static uint32_t port_complete(PortObject *p)
{
	uint32_t n = ring_cons_avail(&p->comp, p->comp.size), direct = 0;
	const uint64_t *addrs = p->comp.descs;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t addr = addrs[(p->comp.cached_cons + i) & p->comp.mask];

		if (frame_mine(p, addr)) {
			free_push(p, addr);
			if (!p->n_tx && p->n_members)
				port_sync_members(p);	/* a member's send, not yet seen */
			if (p->n_tx)
				p->n_tx--;
		} else if (addr < p->frames_end) {
			uint32_t home = home_of(p, addr);

			ret_push(p, home, addr);
			/* sent by home on its direct socket: not ours to count */
			direct += p->dsrc_of && p->dsrc_of[home];
		} else {
			p->st.bad_descs++;
		}
	}
	p->fan.completed += n - direct;
	p->comp.cached_cons += n;
	return n;
}

/* 2. our frames coming home */
static uint32_t port_take_returns(PortObject *p)
{
	uint32_t total = 0;
	uint32_t mask = p->ring_entries - 1;

	for (uint32_t w = 0; w < p->nworkers; w++) {
		struct fp_ring *r = p->ret_in[w];
		uint32_t n, cons, got = 0;

		if (w == p->id || !(n = hring_take(p, r)))
			continue;
		cons = r->cons;
		for (uint32_t i = 0; i < n; i++) {
			uint64_t addr = r->slots[(cons + i) & mask];

			if (!p->n_handoff && p->n_members)
				port_sync_members(p);	/* a member's drop, not yet seen */
			if (frame_ok(p, addr, 0, p->id) && p->n_handoff) {
				free_push(p, addr);
				p->n_handoff--;
				got++;
			} else {
				p->st.bad_descs++;
			}
		}
		/* what a direct socket's owner gives back is what we sent there */
		for (uint32_t j = 0; j < p->n_direct && got; j++) {
			if (p->direct[j].owner == w) {
				uint64_t out = direct_out(&p->st, j), take = got < out ? got : out;

				p->st.direct_returned[j] += take;
				got -= (uint32_t)take;
			}
		}
		redo_note(p, FP_REDO_RET_IN_CONS, w, cons + n);
		total += n;
	}
	return total;
}

/* 3. packets other workers handed to us, onto our TX ring */
static uint32_t port_take_handoffs(PortObject *p)
{
	uint32_t total = 0;
	uint32_t mask = p->ring_entries - 1;
	struct xdp_desc *txd = p->tx.descs;

	for (uint32_t w = 0; w < p->nworkers; w++) {
		struct fp_ring *r = p->fwd_in[w];
		uint32_t n, room, cons, sent = 0, home;

		if (w == p->id || !(n = hring_take(p, r)))
			continue;
		home = lender_home(p, w);
		room = ring_prod_free(&p->tx, n);
		if (n > room)
			n = room;
		if (!n)
			break;
		cons = r->cons;
		for (uint32_t i = 0; i < n; i++) {
			uint64_t e = r->slots[(cons + i) & mask];
			uint64_t addr = e & RING_ADDR_MASK;
			uint32_t len = (uint32_t)(e >> RING_LEN_SHIFT);
			struct xdp_desc *d;

			/* a worker lends only frames of its own (a fanout
			 * member: its owner's) */
			if (!frame_ok(p, addr, len, home) || len < ETH_HLEN) {
				p->st.bad_descs++;
				if (frame_homed(p, addr, home))
					ret_push(p, home, addr);	/* back home */
				continue;
			}
			d = &txd[(p->tx.cached_prod + sent++) & p->tx.mask];
			d->addr = addr;
			d->len = len;
			d->options = 0;
			p->st.tx_bytes += len;
		}
		p->tx.cached_prod += sent;
		redo_note(p, FP_REDO_FWD_IN_CONS, w, cons + n);
		p->st.tx_packets += sent;
		p->st.handoff_in += sent;
		total += n;
	}
	return total;
}

/* An egress that is running, draining, or starting (a replacement taking
 * over a dead worker's socket: what is handed to it waits on the fwd ring
 * and back-pressure holds the rest).  The supervisor marks a worker it gave
 * up on STOPPED, and then its packets are dropped as egress_down. */
static inline bool egress_running(PortObject *p, uint32_t w)
{
	uint32_t state;

	if (w >= p->nworkers)		/* a table naming no worker (port_load_rule) */
		return false;
	state = __atomic_load_n(&ctl_worker(p->v, w)->state, __ATOMIC_RELAXED);
	return state == FP_STATE_RUNNING || state == FP_STATE_DRAINING ||
	       state == FP_STATE_STARTING;
}

/*
 * What a rule's match can compare, read from the frame (the same fields,
 * the same way, as pkt_parse() in bpf/rr_redirect.c): up to two VLAN tags,
 * IPv4 (IHL-aware) or the fixed IPv6 header, TCP/UDP ports of unfragmented
 * or first fragments.  Every read is checked against len; a field the
 * frame is too short to carry is not in `have` and never matches.
 */
struct pkt_info {
	uint32_t have;			/* FP_MATCH_* present */
	uint16_t ethertype;		/* network byte order */
	uint16_t vlan;
	uint8_t ip_proto;
	uint16_t src_port, dst_port;	/* network byte order */
	uint32_t src[4], dst[4];
};

static inline uint16_t get16(const uint8_t *b)
{
	uint16_t v;

	memcpy(&v, b, sizeof(v));
	return v;
}

static inline bool is_vlan(uint16_t proto_be)
{
	return proto_be == htons(0x8100) || proto_be == htons(0x88a8);
}

/*
 * A rule's VLAN action, in two steps so that nothing is written before the
 * packet is known to leave: vlan_delta() says by how much the length will
 * change (max_len is judged on the length the egress gets), vlan_apply()
 * moves the MACs and the packet's start.  A push needs 4 bytes before the
 * packet inside its frame: the kernel puts packets XDP_PACKET_HEADROOM
 * (256) bytes in, so only a descriptor no kernel writes lacks them, and
 * that packet is dropped as invalid.  A pop on an untagged packet (or one
 * too short to hold a whole tag) changes nothing: a rule that must see a
 * tag says so in its match (vlan: ID).
 */
#define VLAN_HLEN	4
#define VLAN_NO_ROOM	INT32_MIN

static inline int32_t vlan_delta(PortObject *p, const struct fp_rule *r,
				 uint64_t addr, const uint8_t *pkt, uint32_t len)
{
	if (r->vlan_op == FP_VLAN_PUSH)
		return (addr & (p->frame_size - 1)) >= VLAN_HLEN ? VLAN_HLEN : VLAN_NO_ROOM;
	if (r->vlan_op == FP_VLAN_POP && len >= ETH_HLEN + VLAN_HLEN &&
	    is_vlan(get16(pkt + 2 * ETH_ALEN)))
		return -VLAN_HLEN;
	return 0;
}

/* delta from vlan_delta(), not VLAN_NO_ROOM; the packet is at *addr */
static inline void vlan_apply(const struct fp_rule *r, uint8_t *umem, uint64_t *addr,
			      int32_t delta)
{
	uint8_t *pkt = umem + *addr;

	if (delta > 0) {
		memmove(pkt - VLAN_HLEN, pkt, 2 * ETH_ALEN);
		memcpy(pkt + 2 * ETH_ALEN - VLAN_HLEN, &r->vlan_tpid, 2);
		memcpy(pkt + 2 * ETH_ALEN - VLAN_HLEN + 2, &r->vlan_tci, 2);
		*addr -= VLAN_HLEN;
	} else if (delta < 0) {
		memmove(pkt + VLAN_HLEN, pkt, 2 * ETH_ALEN);
		*addr += VLAN_HLEN;
	}
}

static void pkt_parse(const uint8_t *pkt, uint32_t len, struct pkt_info *pi)
{
	uint32_t off = ETH_HLEN, l4;
	uint16_t proto;

	memset(pi, 0, sizeof(*pi));
	if (len < ETH_HLEN)
		return;
	proto = get16(pkt + 12);
	if (!is_vlan(proto))
		pi->have |= FP_MATCH_UNTAGGED;
	for (int i = 0; i < 2 && is_vlan(proto); i++) {
		if (len < off + 4)
			return;
		if (i == 0) {
			pi->vlan = ntohs(get16(pkt + off)) & 0x0fff;
			pi->have |= FP_MATCH_VLAN;
		}
		proto = get16(pkt + off + 2);
		off += 4;
	}
	if (is_vlan(proto))		/* a third tag: not parsed further */
		return;
	pi->ethertype = proto;
	pi->have |= FP_MATCH_ETHERTYPE;
	if (proto == htons(0x0800)) {
		const uint8_t *ip = pkt + off;
		uint32_t ihl;

		if (len < off + 20)
			return;
		ihl = (ip[0] & 0x0f) * 4;
		if (ihl < 20)
			return;
		memcpy(&pi->src[0], ip + 12, 4);
		memcpy(&pi->dst[0], ip + 16, 4);
		pi->ip_proto = ip[9];
		pi->have |= FP_MATCH_SRC | FP_MATCH_DST | FP_MATCH_IP_PROTO;
		if (get16(ip + 6) & htons(0x1fff))	/* not the first fragment */
			return;
		l4 = off + ihl;
	} else if (proto == htons(0x86dd)) {
		const uint8_t *ip6 = pkt + off;

		if (len < off + 40)
			return;
		memcpy(pi->src, ip6 + 8, 16);
		memcpy(pi->dst, ip6 + 24, 16);
		pi->ip_proto = ip6[6];
		pi->have |= FP_MATCH_SRC | FP_MATCH_DST | FP_MATCH_IP_PROTO;
		l4 = off + 40;
	} else {
		return;
	}
	if (pi->ip_proto != 6 && pi->ip_proto != 17)
		return;
	if (len < l4 + 4)
		return;
	pi->src_port = get16(pkt + l4);
	pi->dst_port = get16(pkt + l4 + 2);
	pi->have |= FP_MATCH_SRC_PORT | FP_MATCH_DST_PORT;
}

static inline bool prefix_matches(const uint32_t *addr, const uint32_t *net,
				  const uint32_t *mask)
{
	for (int i = 0; i < 4; i++)
		if ((addr[i] & mask[i]) != net[i])
			return false;
	return true;
}

/* fields 0 takes every packet (unlike the XDP program's unused slots) */
static bool match_fits(const struct fp_match *m, const struct pkt_info *pi)
{
	uint32_t f = m->fields;

	if (f & ~pi->have)
		return false;
	if ((f & FP_MATCH_ETHERTYPE) && m->ethertype != pi->ethertype)
		return false;
	if ((f & FP_MATCH_VLAN) && m->vlan != pi->vlan)
		return false;
	if ((f & FP_MATCH_IP_PROTO) && m->ip_proto != pi->ip_proto)
		return false;
	if ((f & FP_MATCH_SRC_PORT) && m->src_port != pi->src_port)
		return false;
	if ((f & FP_MATCH_DST_PORT) && m->dst_port != pi->dst_port)
		return false;
	if ((f & FP_MATCH_SRC) && !prefix_matches(pi->src, m->src, m->src_mask))
		return false;
	if ((f & FP_MATCH_DST) && !prefix_matches(pi->dst, m->dst, m->dst_mask))
		return false;
	return true;
}

/*
 * Partial checksums.  A local stack sending through a virtual link (a veth
 * peer in a container or namespace, a tap) with TX checksum offload on
 * hands its TCP and UDP packets over with CHECKSUM_PARTIAL: the checksum
 * field holds only the pseudo-header's sum (not complemented), and the
 * "hardware" is to finish it.  XDP and AF_XDP see the raw bytes, and a
 * receiver that gets them as they are drops every one (TcpInCsumErrors).
 * On the interfaces where this can happen (netdev flag
 * FP_NETDEV_CSUM_COMPLETE, decided by the supervisor), a worker finishes
 * such a checksum before the packet leaves, as the NIC would have.
 *
 * A frame is completed only when both hold: its checksum field equals the
 * folded pseudo-header sum, and the checksum does not verify.  A frame
 * whose checksum verifies (complete already, e.g. from a wire, or from a
 * peer with offload off) is never touched; a frame with a wrong checksum
 * that is not a partial one is left wrong, for its receiver to drop.  The
 * common cost is the pseudo-header sum (a few adds); the whole packet is
 * summed only when the field matches it.  Only TCP and UDP straight after
 * the IPv4 header (not a fragment) or the fixed IPv6 header, after up to
 * two VLAN tags: where Linux puts partial checksums.
 */
static inline uint64_t csum_add(uint64_t sum, const uint8_t *b, uint32_t len)
{
	while (len >= 4) {
		uint32_t w;

		memcpy(&w, b, 4);
		sum += w;
		b += 4;
		len -= 4;
	}
	if (len >= 2) {
		uint16_t w;

		memcpy(&w, b, 2);
		sum += w;
		b += 2;
		len -= 2;
	}
	if (len) {
		uint16_t w = 0;

		memcpy(&w, b, 1);	/* the odd byte, padded with zero after it */
		sum += w;
	}
	return sum;
}

/* The ones' complement sum folded to 16 bits (in the packet's byte order). */
static inline uint16_t csum_fold16(uint64_t sum)
{
	sum = (sum & 0xffffffffULL) + (sum >> 32);
	sum = (sum & 0xffffffffULL) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

enum { CSUM_LEFT, CSUM_COMPLETED };

static int csum_complete(uint8_t *pkt, uint32_t len)
{
	uint32_t off = ETH_HLEN, l4, l4len, field_off;
	uint64_t pseudo, sum;
	uint16_t proto, field, now;
	uint8_t ip_proto;

	if (len < ETH_HLEN)
		return CSUM_LEFT;
	proto = get16(pkt + 12);
	for (int i = 0; i < 2 && is_vlan(proto); i++) {
		if (len < off + 4)
			return CSUM_LEFT;
		proto = get16(pkt + off + 2);
		off += 4;
	}
	if (proto == htons(0x0800)) {
		const uint8_t *ip = pkt + off;
		uint32_t ihl, total;

		if (len < off + 20 || (ip[0] >> 4) != 4)
			return CSUM_LEFT;
		ihl = (ip[0] & 0x0f) * 4;
		total = ntohs(get16(ip + 2));
		if (ihl < 20 || total < ihl || len < off + total)
			return CSUM_LEFT;
		if (get16(ip + 6) & htons(0x3fff))	/* a fragment (MF or offset) */
			return CSUM_LEFT;
		ip_proto = ip[9];
		l4 = off + ihl;
		l4len = total - ihl;
		pseudo = csum_add(0, ip + 12, 8);
	} else if (proto == htons(0x86dd)) {
		const uint8_t *ip6 = pkt + off;

		if (len < off + 40 || (ip6[0] >> 4) != 6)
			return CSUM_LEFT;
		ip_proto = ip6[6];
		l4 = off + 40;
		l4len = ntohs(get16(ip6 + 4));
		if (len < l4 + l4len)
			return CSUM_LEFT;
		pseudo = csum_add(0, ip6 + 8, 32);
	} else {
		return CSUM_LEFT;
	}
	if (ip_proto == 6)
		field_off = 16;
	else if (ip_proto == 17)
		field_off = 6;
	else
		return CSUM_LEFT;
	if (l4len < field_off + 2 || (ip_proto == 6 && l4len < 20) ||
	    (ip_proto == 17 && l4len < 8))
		return CSUM_LEFT;
	/* the rest of the pseudo header, as words in the packet's byte order:
	 * (0, protocol) and the L4 length (< 64 KiB: its upper word is 0) */
	pseudo += htons(ip_proto) + htons((uint16_t)l4len);
	field = get16(pkt + l4 + field_off);
	if (field != csum_fold16(pseudo))
		return CSUM_LEFT;		/* not a partial checksum */
	sum = csum_add(pseudo, pkt + l4, l4len);	/* the field included */
	if (csum_fold16(sum) == 0xffff)
		return CSUM_LEFT;		/* verifies: complete already */
	/* the sum with the field as zero: take the field out again (adding
	 * its ones' complement), rather than summing the segment twice */
	now = (uint16_t)~csum_fold16(sum + (uint16_t)~field);
	if (ip_proto == 17 && now == 0)
		now = 0xffff;			/* UDP: 0 means "no checksum" */
	memcpy(pkt + l4 + field_off, &now, 2);
	return CSUM_COMPLETED;
}

/* The first of our rules the packet fits; n_rules: none. */
static inline uint32_t port_classify(PortObject *p, const uint8_t *pkt, uint32_t len)
{
	struct pkt_info pi;

	pkt_parse(pkt, len, &pi);
	for (uint32_t k = 0; k < p->n_rules; k++)
		if (match_fits(&p->rules[k].match, &pi))
			return k;
	return p->n_rules;
}

/*
 * 4, with several rules or a match: each packet classified, then dropped
 * or sent where its rule says.  Packets of one batch may go to different
 * egresses, so room is checked per packet against the egress its rule
 * chose: the first packet with no room stops the batch and stays on the
 * RX ring with everything behind it (back-pressure, never a drop).  As in
 * port_receive, every index move is only noted (fwd ring producers in
 * fwd_pending) and published at commit.
 */
static inline __attribute__((always_inline)) uint32_t
port_receive_rules_as(PortObject *p, const bool member)
{
	uint32_t n, i, bad = 0, foreign = 0, tx_room;
	struct xdp_desc *rxd = p->rx.descs;
	uint32_t mask = p->ring_entries - 1;
	uint8_t direct_used = 0;	/* bit j: sent on our direct socket j */

	n = ring_cons_avail(&p->rx, p->batch);
	p->rx_empty = p->rx.cached_prod == p->rx.cached_cons;
	if (!n)
		return 0;
	tx_room = ring_prod_free(&p->tx, n);
	for (i = 0; i < n; i++) {
		const struct xdp_desc *d = &rxd[(p->rx.cached_cons + i) & p->rx.mask];
		uint64_t addr = d->addr;
		uint32_t len = d->len, k, e, out_len;
		const struct fp_rule *r;
		int32_t delta = 0;
		uint8_t *pkt;

		if (!frame_ok(p, addr, len, p->owner)) {
			bad++;
			if (frame_rx_home(p, addr)) {
				rx_drop(p, member, addr);
				p->st.drops[FP_DROP_INVALID]++;
			} else {
				foreign++;
			}
			continue;
		}
		pkt = p->umem + addr;
		k = p->parse ? port_classify(p, pkt, len) : 0;	/* one rule takes all */
		if (k == p->n_rules) {
			p->st.rx_bytes += len;
			rx_drop(p, member, addr);
			p->st.drops[FP_DROP_NO_RULE]++;
			continue;
		}
		r = &p->rules[k];
		e = p->rule_egress[k];
		if (r->vlan_op != FP_VLAN_NONE && len >= ETH_HLEN)
			delta = vlan_delta(p, r, addr, pkt, len);
		out_len = len + (delta == VLAN_NO_ROOM ? 0 : delta);
		if (r->action == FP_ACT_FORWARD && len >= ETH_HLEN && delta != VLAN_NO_ROOM &&
		    (!r->max_len || out_len <= r->max_len) && egress_running(p, e)) {
			if (e == p->id) {
				if (!tx_room)
					break;		/* stays on the RX ring */
			} else if (!member && p->rule_direct[k] >= 0) {
				if (!ring_prod_free(&p->direct[p->rule_direct[k]].tx, 1))
					break;
			} else {
				uint32_t room = hring_free(p->fwd_out[e], p->ring_entries);

				if (room > p->ring_entries)
					room = 0;	/* a peer's garbage index */
				if (p->fwd_pending[e] >= room)
					break;
			}
		}
		p->st.rx_bytes += len;
		p->st.rule_packets[k]++;
		p->st.rule_bytes[k] += len;
		if (r->action != FP_ACT_FORWARD) {
			rx_drop(p, member, addr);
			p->st.drops[r->action == FP_ACT_DROP ? FP_DROP_RULE : FP_DROP_NO_RULE]++;
			continue;
		}
		if (len < ETH_HLEN || delta == VLAN_NO_ROOM) {
			rx_drop(p, member, addr);
			p->st.drops[FP_DROP_INVALID]++;
			continue;
		}
		if (r->max_len && out_len > r->max_len) {
			rx_drop(p, member, addr);
			p->st.drops[FP_DROP_TOO_LONG]++;
			continue;
		}
		if (!egress_running(p, e)) {
			rx_drop(p, member, addr);
			p->st.drops[FP_DROP_EGRESS_DOWN]++;
			continue;
		}
		if (p->csum)
			p->st.csum_completed += csum_complete(pkt, len);
		rewrite_macs(r, pkt);
		if (delta) {
			vlan_apply(r, p->umem, &addr, delta);
			len = out_len;
		}
		if (e == p->id) {
			struct xdp_desc *t = &((struct xdp_desc *)p->tx.descs)
						[p->tx.cached_prod++ & p->tx.mask];

			t->addr = addr;
			t->len = len;
			t->options = 0;
			tx_room--;
			if (member)
				p->fan.took_tx++;	/* the owner's frame */
			else
				p->n_tx++;
			p->st.tx_packets++;
			p->st.tx_bytes += len;
		} else if (!member && p->rule_direct[k] >= 0) {
			direct_put(p, (uint32_t)p->rule_direct[k], addr, len);
			direct_used |= 1U << p->rule_direct[k];
		} else {
			struct fp_ring *out = p->fwd_out[e];

			out->slots[(out->prod + p->fwd_pending[e]++) & mask] =
				addr | (uint64_t)len << RING_LEN_SHIFT;
			if (!member)
				p->n_handoff++;
			p->st.handoff_out++;
		}
	}
	p->rx.cached_cons += i;
	if (member) {
		p->fan.took_rx += i - foreign;
	} else if (p->n_rx >= i - foreign) {
		p->n_rx -= i - foreign;
	} else {
		bad += i - foreign - p->n_rx;
		p->n_rx = 0;
	}
	p->st.rx_packets += i - foreign;
	p->st.bad_descs += bad;
	for (uint32_t k = 0; k < p->n_rules; k++) {
		uint32_t e = p->rule_egress[k];

		if (e < p->nworkers && p->fwd_pending[e]) {
			redo_note(p, FP_REDO_FWD_OUT_PROD, e, p->fwd_out[e]->prod + p->fwd_pending[e]);
			p->fwd_pending[e] = 0;
			p->wake[e] = 1;
		}
	}
	for (uint32_t j = 0; direct_used; j++, direct_used >>= 1) {
		if (direct_used & 1)
			direct_sent(p, j);
	}
	return i;
}

/* 4. our RX ring */
static inline __attribute__((always_inline)) uint32_t
port_receive_as(PortObject *p, const bool member)
{
	uint32_t want = p->batch, n, dropped = 0, too_long = 0, bad = 0, foreign = 0;
	struct xdp_desc *rxd = p->rx.descs;
	struct fp_ring *out = NULL;
	struct ring *dtx = NULL;	/* our direct socket's TX ring */
	uint32_t out_prod = 0, dj = 0;
	uint32_t mask = p->ring_entries - 1;
	uint32_t action = p->rule.action;
	uint32_t max_len = p->rule.max_len ? p->rule.max_len : UINT32_MAX;
	uint64_t rx_bytes0 = p->st.rx_bytes;
	int reason = -1;

	if (p->classify)
		return port_receive_rules_as(p, member);
	if (action == FP_ACT_FORWARD) {
		if (p->egress == p->id) {
			want = ring_prod_free(&p->tx, want);
			if (want > p->batch)
				want = p->batch;
		} else if (!egress_running(p, p->egress)) {
			action = FP_ACT_DROP;
			reason = FP_DROP_EGRESS_DOWN;
		} else if (!member && p->egress_direct >= 0) {
			dj = (uint32_t)p->egress_direct;
			dtx = &p->direct[dj].tx;
			want = ring_prod_free(dtx, want);
			if (want > p->batch)
				want = p->batch;
		} else {
			out = p->fwd_out[p->egress];
			want = hring_free(out, p->ring_entries);
			if (want > p->batch)
				want = p->batch;
			out_prod = out->prod;
		}
	} else {
		reason = action == FP_ACT_DROP ? FP_DROP_RULE : FP_DROP_NO_RULE;
		action = FP_ACT_DROP;
	}
	n = ring_cons_avail(&p->rx, want);
	/* ring_cons_avail re-read the producer if it had nothing cached, so
	 * this tells empty apart from held back by a full egress (want 0) */
	p->rx_empty = p->rx.cached_prod == p->rx.cached_cons;
	if (!n)
		return 0;

	for (uint32_t i = 0; i < n; i++) {
		const struct xdp_desc *d = &rxd[(p->rx.cached_cons + i) & p->rx.mask];
		uint64_t addr = d->addr;
		uint32_t len = d->len;

		/* the kernel fills only frames we gave it: anything else is
		 * not ours to free or send */
		if (!frame_ok(p, addr, len, p->owner)) {
			bad++;
			if (frame_rx_home(p, addr)) {
				rx_drop(p, member, addr);
				dropped++;
			} else {
				foreign++;
			}
			continue;
		}
		p->st.rx_bytes += len;
		if (action == FP_ACT_DROP) {
			rx_drop(p, member, addr);
			p->st.drops[reason]++;
			continue;
		}
		if (len < ETH_HLEN) {
			rx_drop(p, member, addr);
			dropped++;
			continue;
		}
		if (len > max_len) {
			rx_drop(p, member, addr);
			too_long++;
			continue;
		}
		if (p->csum)
			p->st.csum_completed += csum_complete(p->umem + addr, len);
		rewrite_macs(&p->rule, p->umem + addr);
		if (dtx) {
			direct_put(p, dj, addr, len);
		} else if (!out) {
			struct xdp_desc *t = &((struct xdp_desc *)p->tx.descs)
						[p->tx.cached_prod++ & p->tx.mask];

			t->addr = addr;
			t->len = len;
			t->options = 0;
			if (member)
				p->fan.took_tx++;	/* the owner's frame */
			else
				p->n_tx++;
			p->st.tx_packets++;
			p->st.tx_bytes += len;
		} else {
			out->slots[out_prod++ & mask] = addr | (uint64_t)len << RING_LEN_SHIFT;
			if (!member)
				p->n_handoff++;
			p->st.handoff_out++;
		}
	}
	p->rx.cached_cons += n;
	if (p->n_rules) {		/* one rule, no match: it takes them all */
		p->st.rule_packets[0] += n - bad;
		p->st.rule_bytes[0] += p->st.rx_bytes - rx_bytes0;
	}
	/* Every frame of ours on the RX ring was given to the kernel (counted
	 * in rx) by us; a kernel that hands back more than it was given must
	 * not wrap the count.  A fanout member's are the owner's, which it
	 * counts for it (fastpath.h, "Fanout"). */
	if (member) {
		p->fan.took_rx += n - foreign;
	} else if (p->n_rx >= n - foreign) {
		p->n_rx -= n - foreign;
	} else {
		bad += n - foreign - p->n_rx;
		p->n_rx = 0;
	}
	p->st.rx_packets += n - foreign;
	p->st.drops[FP_DROP_INVALID] += dropped;
	p->st.drops[FP_DROP_TOO_LONG] += too_long;
	p->st.bad_descs += bad;
	if (out && out_prod != out->prod) {
		redo_note(p, FP_REDO_FWD_OUT_PROD, p->egress, out_prod);
		p->wake[p->egress] = 1;
	}
	if (dtx)
		direct_sent(p, dj);
	return n;
}

/* The receive paths compiled twice, so that a worker that is not a fanout
 * member pays no per-packet test for being one. */
static uint32_t port_receive(PortObject *p)
{
	return p->member ? port_receive_as(p, true) : port_receive_as(p, false);
}

/*
 * 5. start transmission; copy mode sends a bounded number per call.
 * With busy polling, the kernel does not move our TX ring by itself (our
 * queue's interrupts stay masked while we keep polling): one sendto() per
 * iteration runs the NAPI poll that sends and completes, as long as the
 * kernel has not taken everything, need_wakeup or not.
 */
static bool kick_ring(PortObject *p, struct ring *tx, int fd)
{
	uint32_t cons = load_acquire(tx->consumer);

	if (cons == tx->cached_prod)
		return true;		/* the kernel has taken everything */
	if (!ring_needs_wakeup(tx)) {
		if (p->busy_poll && fd >= 0) {
			p->st.busy_polls++;
			sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
		}
		return true;
	}
	for (int i = 0; i < 64 && cons != tx->cached_prod; i++) {
		uint32_t before = cons;
		int ret;

		p->st.tx_kicks++;
		ret = sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
		cons = load_acquire(tx->consumer);
		/* EAGAIN: the kernel's per-call budget ran out (go on) or the
		 * device queue is full (no progress: retry next iteration);
		 * EBUSY, ENOBUFS, ENETDOWN: retry next iteration. */
		if ((ret < 0 && errno != EAGAIN) || cons == before)
			return false;
	}
	return cons == tx->cached_prod;
}

/* Our TX ring, then our direct sockets' ("Direct transmission"): one
 * whose kernel side made no progress (its owner's COMPLETION ring may be
 * full) wakes that owner, to collect its completions. */
static void port_kick_tx(PortObject *p)
{
	kick_ring(p, &p->tx, p->xsk_fd);
	for (uint32_t j = 0; j < p->n_direct; j++) {
		struct direct_tx *d = &p->direct[j];

		if (d->open && !kick_ring(p, &d->tx, d->fd))
			p->wake[d->owner] = 1;
	}
}

/*
 * 6. FILL ring from the free list (published at commit).  A need_wakeup
 * on the FILL ring after we gave it frames is a kick (the driver ran dry
 * and waits for us).  With busy polling, an empty RX ring (or a FILL ring
 * that needs a wakeup, even with nothing new on it) is a poll: the packets
 * are waiting in the NIC until our recvfrom() runs the NAPI poll (the
 * kernel's AF_XDP documentation, "preferred busy polling").
 */
static uint32_t port_fill(PortObject *p)
{
	uint32_t n = p->n_free, room;
	uint64_t *fq = p->fill.descs;

	if (!n)
		return 0;
	room = ring_prod_free(&p->fill, n);
	if (n > room)
		n = room;
	for (uint32_t i = 0; i < n; i++)
		fq[(p->fill.cached_prod + i) & p->fill.mask] = p->freelist[--p->n_free];
	p->fill.cached_prod += n;
	p->n_rx += n;
	return n;
}

/* after the commit: the syscall the FILL ring asks for, if any */
static void port_fill_wakeup(PortObject *p, uint32_t filled)
{
	if (filled && ring_needs_wakeup(&p->fill))
		p->st.fill_kicks++;
	else if (p->busy_poll && (p->rx_empty || ring_needs_wakeup(&p->fill)))
		p->st.busy_polls++;
	else
		return;
	recvfrom(p->xsk_fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
}

/* 7. wake the peers we gave work to, if they sleep */
static void port_wake_peers(PortObject *p)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (uint32_t w = 0; w < p->nworkers; w++) {
		if (!p->wake[w])
			continue;
		p->wake[w] = 0;
		uint32_t *sleeping = &ctl_worker(p->v, w)->sleeping;

		if (__atomic_load_n(sleeping, __ATOMIC_RELAXED) &&
		    __atomic_exchange_n(sleeping, 0, __ATOMIC_SEQ_CST) && p->peer_efd[w] >= 0) {
			uint64_t one = 1;

			if (write(p->peer_efd[w], &one, sizeof(one)) < 0) {
				/* EAGAIN: counter saturated, the peer is awake anyway */
			}
		}
	}
}

/*
 * Steps 1-4 and the FILL top-up: they change nothing anyone else can see
 * (descriptors past producers, free-list pushes past the committed count,
 * indices only noted) until port_commit().  Returns the frames moved;
 * *filled: those given to the FILL ring.
 */
static inline __attribute__((always_inline)) uint32_t port_iterate(PortObject *p,
								   uint32_t *filled)
{
	uint32_t work = 0;

	if (__atomic_load_n(&p->tab->generation, __ATOMIC_ACQUIRE) != p->generation)
		port_load_rule(p);
	if (p->n_members)
		port_sync_members(p);
	work += port_complete(p);
	work += port_take_returns(p);
	work += port_take_handoffs(p);
	work += port_receive(p);
	*filled = port_fill(p);
	p->st.loops++;
	if (work)
		p->st.busy_loops++;
	return work;
}

/*
 * One turn of the worker's loop: port_iterate(), then port_commit()
 * publishes all of it at once (with the counters: scrapes see them at
 * most one batch old); then the syscalls and wake-ups.  Port.run,
 * microbench() and fuzz() all call this, so the benchmark times and the
 * fuzzer drives exactly the code the workers run.
 */
static uint32_t port_step(PortObject *p)
{
	uint32_t filled, work = port_iterate(p, &filled);

	if (work || filled)
		port_commit(p);
	port_kick_tx(p);
	port_fill_wakeup(p, filled);
	port_wake_peers(p);
	return work;
}

static bool port_has_input(PortObject *p)
{
	if (ring_cons_avail(&p->rx, 1) || ring_cons_avail(&p->comp, 1))
		return true;
	for (uint32_t w = 0; w < p->nworkers; w++) {
		if (w == p->id)
			continue;
		if (hring_avail(p->fwd_in[w]) || hring_avail(p->ret_in[w]))
			return true;
	}
	return false;
}

/*
 * As an egress owner: frames other workers sent on our queue through
 * their direct sockets and have not had back yet (their committed
 * counters, each read from one committed half of its record).  We wait
 * for them before reporting drained, and nap rather than sleep while
 * there are any, to give them back soon.
 */
static uint64_t direct_inflight(PortObject *p)
{
	uint64_t total = 0;

	for (uint32_t i = 0; i < p->n_dsrc; i++) {
		struct fp_commit *c = &ctl_worker(p->v, p->dsrc[i].w)->commit;
		uint32_t j = p->dsrc[i].j;

		for (int tries = 0; tries < 8; tries++) {
			uint64_t w = __atomic_load_n(&c->word, __ATOMIC_ACQUIRE);
			const struct fp_stats *st = &c->counts[(w >> 1) & 1].stats;
			uint64_t sent = __atomic_load_n(&st->direct_packets[j], __ATOMIC_RELAXED);
			uint64_t back = __atomic_load_n(&st->direct_returned[j], __ATOMIC_RELAXED);

			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if ((__atomic_load_n(&c->word, __ATOMIC_RELAXED) >> 1) == (w >> 1)) {
				total += sent > back ? sent - back : 0;
				break;
			}
		}
	}
	return total;
}

/* Frames of ours out on direct sockets (waiting for their owners). */
static bool direct_lent(PortObject *p)
{
	for (uint32_t j = 0; j < p->n_direct; j++) {
		if (direct_out(&p->st, j))
			return true;
	}
	return false;
}

/* Idle with frames out on direct sockets, a nap already spent waiting for
 * them: wake their owners (once per socket until we send on it again). */
static void direct_wake_owners(PortObject *p)
{
	for (uint32_t j = 0; j < p->n_direct; j++) {
		if (direct_out(&p->st, j) && !(p->direct_woken & (1U << j))) {
			p->direct_woken |= (uint8_t)(1U << j);
			p->wake[p->direct[j].owner] = 1;
		}
	}
	port_wake_peers(p);
}

/*
 * A direct socket the table no longer allows (its queue is being removed:
 * the supervisor never takes one back otherwise) is closed once nothing of
 * it is out: the kernel has taken every descriptor and every frame came
 * back.  Then, with the supervisor's copy closed too, the queue's buffer
 * pool can go and the queue be bound again.  For good: a queue added back
 * is reached over the fwd ring.
 */
static void direct_retire(PortObject *p)
{
	for (uint32_t j = 0; j < p->n_direct; j++) {
		struct direct_tx *d = &p->direct[j];

		if (!d->open || d->ok || direct_out(&p->st, j) ||
		    load_acquire(d->tx.consumer) != d->tx.cached_prod ||
		    __atomic_load_n(d->tx.producer, __ATOMIC_RELAXED) != d->tx.cached_prod)
			continue;
		ring_unmap(&d->tx);
		ring_none(&d->tx);
		if (d->fd >= 0)
			close(d->fd);
		d->fd = -1;
		d->open = false;
	}
}

/* Block until there is input, a signal, or timeout_ms.  Returns -1 on a
 * signal (EINTR), so that Python runs its handlers. */
static int port_sleep(PortObject *p, int timeout_ms)
{
	struct pollfd fds[2] = {
		{ .fd = p->xsk_fd, .events = POLLIN },
		{ .fd = p->efd, .events = POLLIN },
	};
	int ret = 0;

	__atomic_store_n(&p->me->sleeping, 1, __ATOMIC_SEQ_CST);
	if (!port_has_input(p)) {
		p->st.sleeps++;
		ret = poll(fds, 2, timeout_ms);
	}
	__atomic_store_n(&p->me->sleeping, 0, __ATOMIC_SEQ_CST);
	if (ret > 0 && (fds[1].revents & POLLIN)) {
		uint64_t v;

		if (read(p->efd, &v, sizeof(v)) < 0) {
			/* EAGAIN: a concurrent reader drained it; fine */
		}
	}
	if (ret < 0 && errno == EINTR)
		return -1;
	return 0;
}

/*
 * Adaptive spinning.  A quiet worker sleeps in poll(), and each packet then
 * costs a wake-up (tens of microseconds on a shared CPU, and two per hop:
 * the ingress worker, then the egress one).  But traffic comes in bursts and
 * exchanges: the reply to a request this worker just forwarded comes back
 * a few tens of microseconds later.  So after work the worker keeps looking
 * for spin_ns before it sleeps.  The budget is learnt from what the spins
 * find: work found after a gap while spinning (a hit) sets it to twice that
 * gap (at least SPIN_MIN_NS, at most spin_max_ns), a spin that ran out (a
 * miss) shrinks it by an eighth.  A request/response exchange settles at
 * about twice its turnaround; sparse, unrelated packets shrink it to
 * SPIN_MIN_NS; a worker with nothing to do spends nothing, since it spins
 * only after work.  While it spins its sleeping flag is clear, so peers
 * handing it frames skip the eventfd write too.  Each empty turn of the
 * spin yields the CPU (sched_yield()): workers sharing a CPU (the ingress
 * and egress worker of one path, often) must not spin while the other has
 * work; alone on the CPU, the call returns at once.
 */
#define SPIN_MIN_NS 2000ULL

static inline void spin_learn(PortObject *p, bool hit, uint64_t gap)
{
	if (hit) {
		uint64_t b = 2 * gap;

		p->spin_ns = b < SPIN_MIN_NS ? SPIN_MIN_NS : b > p->spin_max_ns ? p->spin_max_ns : b;
	} else if (p->spin_ns > SPIN_MIN_NS) {
		p->spin_ns -= p->spin_ns >> 3;
	}
}

/* run(budget_us) -> 0 when the budget ran out, 1 when a signal arrived */
static PyObject *Port_run(PortObject *p, PyObject *args)
{
	unsigned long long budget_us;
	uint64_t start, now, deadline;
	int result = 0;
	uint32_t idle = 0;

	if (!PyArg_ParseTuple(args, "K", &budget_us))
		return NULL;
	if (!p->umem) {
		PyErr_SetString(PyExc_ValueError, "port is closed");
		return NULL;
	}
	start = now_ns();
	deadline = start + budget_us * 1000ULL;
	__atomic_store_n(&p->me->state, p->draining ? FP_STATE_DRAINING : FP_STATE_RUNNING,
			 __ATOMIC_RELEASE);
	for (;;) {
		uint32_t work = port_step(p);

		if (p->n_direct && !(p->st.loops & 4095))
			direct_retire(p);
		now = now_ns();
		if (work) {
			if (idle && !p->slept && p->spin_max_ns && p->last_work_ns)
				spin_learn(p, true, now - p->last_work_ns);
			idle = 0;
			p->slept = false;
			p->direct_naps = 0;
			p->last_work_ns = now;
		} else if (!p->spin && ++idle > 8 && !p->slept &&
			   now - p->last_work_ns < p->spin_ns) {
			/* spinning: but a peer worker (or anyone) runnable on
			 * this CPU goes first; alone here it returns at once */
			sched_yield();
		} else if (!p->spin && idle > 8) {
			if (p->spin_max_ns && !p->slept)
				spin_learn(p, false, 0);
			p->slept = true;
			/* Frames still out in the kernel's TX path, or lent to
			 * a peer, come back without waking us: look again soon.
			 * So do others' sent on our queue directly. */
			int ms = (p->n_tx || p->n_handoff || port_tx_inflight(p) ||
				  (p->n_dsrc && direct_inflight(p))) ? 1 :
				 (int)((deadline > now ? deadline - now : 0) / 1000000ULL) + 1;

			if (p->n_direct) {
				if (direct_lent(p) && p->direct_naps++)
					direct_wake_owners(p);
				direct_retire(p);
			}

			port_commit(p);		/* the counters, fresh for a scrape */
			rings_publish(p);
			__atomic_store_n(&p->me->heartbeat_ns, now, __ATOMIC_RELAXED);
			if (port_sleep(p, ms) < 0) {
				result = 1;
				break;
			}
			now = now_ns();
		}
		__atomic_store_n(&p->me->heartbeat_ns, now, __ATOMIC_RELAXED);
		if (now >= deadline)
			break;
	}
	port_commit(p);
	rings_publish(p);
	return PyLong_FromLong(result);
}

/*
 * drained() -> True when this worker holds nothing another worker or the
 * wire still waits for: nothing on its RX ring or its incoming handoff
 * rings, every descriptor it put on its TX ring completed (borrowed frames
 * are home again), and every frame it lent out returned.  A fanout member:
 * every descriptor on its TX ring taken by the kernel (the owner sees the
 * completions); an owner: its members stopped and all they sent completed.  Frames on its
 * FILL ring stay: they die with the socket and come back when the slot is
 * reset.  A worker being removed by a reload (its socket out of XSKMAP,
 * no table names it as egress any more) loops until this holds.
 */
/* rx_empty() -> True when nothing waits on the RX ring */
static PyObject *Port_rx_empty(PortObject *p, PyObject *noargs)
{
	if (!p->umem) {
		PyErr_SetString(PyExc_ValueError, "port is closed");
		return NULL;
	}
	return PyBool_FromLong(!ring_cons_avail(&p->rx, 1));
}

/* mark_draining(): report DRAINING from now on (see fastpath.h) */
static PyObject *Port_mark_draining(PortObject *p, PyObject *noargs)
{
	p->draining = true;
	if (p->me)
		__atomic_store_n(&p->me->state, FP_STATE_DRAINING, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

static PyObject *Port_drained(PortObject *p, PyObject *noargs)
{
	if (!p->umem) {
		PyErr_SetString(PyExc_ValueError, "port is closed");
		return NULL;
	}
	/* an owner outlives its members: what they still send completes on
	 * our COMPLETION ring, and only we give those frames back */
	for (uint32_t k = 0; k < p->n_members; k++) {
		uint32_t st = __atomic_load_n(&ctl_worker(p->v, p->members[k])->state,
					      __ATOMIC_ACQUIRE);

		if (st != FP_STATE_STOPPED && st != FP_STATE_NONE)
			Py_RETURN_FALSE;
	}
	if (p->n_members)
		port_sync_members(p);
	if (ring_cons_avail(&p->rx, 1) || ring_cons_avail(&p->comp, 1) ||
	    port_tx_inflight(p) || p->n_handoff || direct_inflight(p))
		Py_RETURN_FALSE;
	for (uint32_t w = 0; w < p->nworkers; w++) {
		if (w != p->id && (hring_avail(p->fwd_in[w]) || hring_avail(p->ret_in[w])))
			Py_RETURN_FALSE;
	}
	Py_RETURN_TRUE;
}

static PyObject *Port_stop(PortObject *p, PyObject *noargs)
{
	if (p->me)
		__atomic_store_n(&p->me->state, FP_STATE_STOPPED, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

static PyObject *Port_close(PortObject *p, PyObject *noargs)
{
	port_unmap(p);
	Py_RETURN_NONE;
}

static PyObject *Port_heartbeat(PortObject *p, PyObject *noargs)
{
	if (p->me)
		__atomic_store_n(&p->me->heartbeat_ns, now_ns(), __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

/* report_usage(pid, user_ns, system_ns, rss_bytes, uss_bytes): this
 * worker's own resource use, into its slot (struct fp_usage) */
static PyObject *Port_report_usage(PortObject *p, PyObject *args)
{
	unsigned int pid;
	unsigned long long user, sys, rss, uss;

	if (!PyArg_ParseTuple(args, "IKKKK", &pid, &user, &sys, &rss, &uss))
		return NULL;
	if (p->me) {
		struct fp_usage *u = &p->me->usage;

		__atomic_store_n(&u->user_ns, user, __ATOMIC_RELAXED);
		__atomic_store_n(&u->system_ns, sys, __ATOMIC_RELAXED);
		__atomic_store_n(&u->rss_bytes, rss, __ATOMIC_RELAXED);
		__atomic_store_n(&u->uss_bytes, uss, __ATOMIC_RELAXED);
		__atomic_store_n(&u->pid, pid, __ATOMIC_RELEASE);
	}
	Py_RETURN_NONE;
}

/* What a port is built from: Port() takes it from Python, microbench()
 * fills it in for its synthetic ports. */
struct port_cfg {
	uint32_t id;
	int xsk_fd;			/* -1: synthetic rings */
	int umem_fd;
	uint64_t umem_size;
	uint32_t rx, tx, fill, comp;	/* ring sizes */
	uint32_t batch;
	bool spin;
	bool busy_poll;
	uint32_t spin_max_us;		/* adaptive spinning's cap; 0: none */
	PortObject *adopt;		/* fuzz() only: take over this synthetic
					 * port's rings (synth_adopt()) */
	int direct_fd[FP_MAX_DIRECT];	/* our direct sockets, by fp_assign.direct
					 * index; -1: none (closed) */
	uint32_t n_direct_fd;
};

static int map_xsk_rings(PortObject *p, int fd)
{
	struct xdp_mmap_offsets off;
	socklen_t optlen = sizeof(off);
	int err;

	if (getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen))
		return -errno;
	if (p->member) {	/* the owner's socket has the queue's FILL and COMPLETION */
		ring_none(&p->fill);
		ring_none(&p->comp);
		err = 0;
	} else {
		err = ring_map(&p->fill, fd, &off.fr, p->fill.size, sizeof(uint64_t),
			       XDP_UMEM_PGOFF_FILL_RING, true);
		if (!err)
			err = ring_map(&p->comp, fd, &off.cr, p->comp.size, sizeof(uint64_t),
				       XDP_UMEM_PGOFF_COMPLETION_RING, false);
	}
	if (!err)
		err = ring_map(&p->rx, fd, &off.rx, p->rx.size, sizeof(struct xdp_desc),
			       XDP_PGOFF_RX_RING, false);
	if (!err)
		err = ring_map(&p->tx, fd, &off.tx, p->tx.size, sizeof(struct xdp_desc),
			       XDP_PGOFF_TX_RING, true);
	return err;
}

static int synth_rings(PortObject *p)
{
	int err = 0;

	if (p->member) {
		ring_none(&p->fill);
		ring_none(&p->comp);
	} else {
		err = ring_synth(&p->fill, p->fill.size, sizeof(uint64_t), true);
		if (!err)
			err = ring_synth(&p->comp, p->comp.size, sizeof(uint64_t), false);
	}
	if (!err)
		err = ring_synth(&p->rx, p->rx.size, sizeof(struct xdp_desc), false);
	if (!err)
		err = ring_synth(&p->tx, p->tx.size, sizeof(struct xdp_desc), true);
	return err;
}

/*
 * For fuzz() only: take over a synthetic port's four rings, as a worker
 * that replaces a dead one maps the same socket's rings again.  The old
 * port is left with nothing to release; it must not step again.
 */
static int synth_adopt(PortObject *p, PortObject *old)
{
	struct ring *from[4] = { &old->fill, &old->comp, &old->rx, &old->tx };
	struct ring *to[4] = { &p->fill, &p->comp, &p->rx, &p->tx };

	for (int i = p->member ? 2 : 0; i < 4; i++) {
		if (!from[i]->map || !from[i]->heap || from[i]->size != to[i]->size)
			return -EINVAL;
	}
	if (p->member) {
		ring_none(&p->fill);
		ring_none(&p->comp);
	}
	for (int i = p->member ? 2 : 0; i < 4; i++) {
		/* FILL and TX are the producer side */
		ring_setup(to[i], from[i]->map, from[i]->map_len, &synth_ring_off, to[i]->size,
			   to[i] == &p->fill || to[i] == &p->tx);
		to[i]->heap = true;
		from[i]->map = NULL;
	}
	return 0;
}

static bool is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

/*
 * Our direct sockets (fp_assign.direct, "Direct transmission"): each one's
 * TX ring, from its socket (cfg->direct_fd), a dead port's (cfg->adopt,
 * fuzz()), or made up (synthetic).  A fanout owner or member has none (its
 * group's frames are lent by several workers: see there).  A socket closed
 * for good (fd -1) stays closed, and the egress takes the fwd ring.
 */
static int direct_open(PortObject *p, const struct port_cfg *cfg)
{
	const struct fp_assign *me = ctl_assign(p->v, p->id);
	uint32_t n = me->n_direct < FP_MAX_DIRECT ? me->n_direct : FP_MAX_DIRECT;
	struct xdp_mmap_offsets off;
	bool have_off = false;

	if (p->member || p->n_members)
		n = 0;
	p->n_direct = n;
	for (uint32_t j = 0; j < n; j++) {
		struct direct_tx *d = &p->direct[j];
		uint32_t o = me->direct[j];
		int err;

		d->fd = -1;
		d->open = d->ok = false;
		d->owner = o;
		ring_none(&d->tx);
		if (o >= p->nworkers || o == p->id)
			continue;
		if (cfg->xsk_fd >= 0) {
			int fd = j < cfg->n_direct_fd ? cfg->direct_fd[j] : -1;
			socklen_t optlen = sizeof(off);

			if (fd < 0)
				continue;
			if (!have_off && getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen))
				return -errno;
			have_off = true;
			err = ring_map(&d->tx, fd, &off.tx, cfg->tx, sizeof(struct xdp_desc),
				       XDP_PGOFF_TX_RING, true);
			d->fd = fd;
		} else if (cfg->adopt) {
			struct direct_tx *old = j < cfg->adopt->n_direct ? &cfg->adopt->direct[j] : NULL;

			if (!old || !old->open)
				continue;
			if (!old->tx.map || old->tx.size != cfg->tx)
				return -EINVAL;
			ring_setup(&d->tx, old->tx.map, old->tx.map_len, &synth_ring_off, cfg->tx, true);
			d->tx.heap = old->tx.heap;
			old->tx.map = NULL;
			err = 0;
		} else {
			err = ring_synth(&d->tx, cfg->tx, sizeof(struct xdp_desc), true);
		}
		if (err)
			return err;
		d->open = true;
	}
	return 0;
}

/* Re-read a ring's shared indices into our cached ones. */
static void ring_resync(struct ring *r, bool producer)
{
	r->cached_prod = load_acquire(r->producer);
	r->cached_cons = load_acquire(r->consumer);
	if (producer)
		r->cached_cons += r->size;
}

/*
 * Pick up where the last worker in this slot left off, on the same socket
 * (fastpath.h, "Crash consistency"): a commit it had begun is finished from
 * its redo log, its last committed counts are ours, and the rest of its
 * last iteration (descriptors it read but never released) is read again.
 * A fresh slot has committed nothing and every frame on its free list.
 */
static void port_recover(PortObject *p)
{
	struct fp_commit *c = &p->me->commit;
	uint64_t word = __atomic_load_n(&c->word, __ATOMIC_ACQUIRE);
	const struct fp_counts *k = &c->counts[(word >> 1) & 1];

	if (word & 1) {
		uint32_t len = c->log_len;

		if (len > FP_REDO_MAX(p->nworkers))
			len = FP_REDO_MAX(p->nworkers);
		redo_apply(p, len);
		__atomic_store_n(&c->word, word & ~1ULL, __ATOMIC_RELEASE);
	}
	p->redo_len = 0;
	ring_resync(&p->fill, true);
	ring_resync(&p->tx, true);
	ring_resync(&p->rx, false);
	ring_resync(&p->comp, false);
	for (uint32_t j = 0; j < p->n_direct; j++) {
		if (p->direct[j].open)
			ring_resync(&p->direct[j].tx, true);
	}
	p->n_free = k->frames.free <= p->fpw ? k->frames.free : p->fpw;
	p->n_rx = k->frames.rx;
	p->n_tx = k->frames.tx;
	p->n_handoff = k->frames.handoff;
	memcpy(&p->st, &k->stats, sizeof(p->st));
	p->fan = k->fanout;
}

/*
 * Everything a port needs, for Port() and microbench() alike: the control
 * area and the handoff rings to and from every peer, the UMEM, our four
 * rings (the socket's, or synthetic ones when cfg->xsk_fd is -1), then the
 * frame counts picked up where the last worker with this id left them and
 * the FILL ring primed.  efds: one eventfd per worker, or NULL for none.
 * On failure the exception is set and p holds what port_unmap() releases.
 */
static int port_open(PortObject *p, ControlObject *c, const struct port_cfg *cfg, PyObject *efds)
{
	PyObject *seq = NULL;
	uint32_t n, id = cfg->id;
	int err;

	if (p->control) {
		PyErr_SetString(PyExc_ValueError, "port already open");
		return -1;
	}
	if (ctl_check_worker(c, id))
		return -1;
	if (cfg->batch == 0 || cfg->batch > 4096) {
		PyErr_SetString(PyExc_ValueError, "batch_size out of range");
		return -1;
	}
	n = c->v.lay.nworkers;
	p->owner = __atomic_load_n(&ctl_assign(&c->v, id)->owner, __ATOMIC_RELAXED);
	if (p->owner >= n)
		p->owner = id;
	p->member = p->owner != id;
	if (!is_pow2(cfg->rx) || !is_pow2(cfg->tx) ||
	    (!p->member && (!is_pow2(cfg->fill) || !is_pow2(cfg->comp)))) {
		PyErr_SetString(PyExc_ValueError, "ring sizes must be powers of two");
		return -1;
	}
	if (cfg->umem_size < (uint64_t)n * c->v.lay.frames_per_worker * c->v.lay.frame_size) {
		PyErr_SetString(PyExc_ValueError, "UMEM smaller than the control area's frames");
		return -1;
	}
	if (efds) {
		seq = PySequence_Fast(efds, "eventfds must be a sequence");
		if (!seq)
			return -1;
		if ((uint32_t)PySequence_Fast_GET_SIZE(seq) != n) {
			Py_DECREF(seq);
			PyErr_SetString(PyExc_ValueError, "need one eventfd per worker");
			return -1;
		}
	}
	Py_INCREF(c);
	p->control = (PyObject *)c;
	p->v = &c->v;
	p->tab = c->v.tab;
	p->ring_entries = c->v.lay.ring_entries;
	p->id = id;
	p->nworkers = n;
	p->me = ctl_worker(&c->v, id);
	p->xsk_fd = cfg->xsk_fd;
	p->frame_size = c->v.lay.frame_size;
	p->frame_mask = ~((uint64_t)p->frame_size - 1);
	p->fpw = c->v.lay.frames_per_worker;
	p->home_span = (uint64_t)p->fpw * p->frame_size;
	p->home_base = id * p->home_span;
	p->rx_base = p->owner * p->home_span;
	p->n_members = 0;
	if (!p->member) {
		const struct fp_assign *me = ctl_assign(&c->v, id);
		uint32_t m = me->n_members < FP_MAX_FANOUT ? me->n_members : FP_MAX_FANOUT - 1;

		for (uint32_t k = 0; k < m; k++) {
			uint32_t w = me->members[k];

			if (w < n && w != id)
				p->members[p->n_members++] = w;
		}
	}
	p->frames_end = n * p->home_span;
	p->batch = cfg->batch;
	p->spin = cfg->spin;
	p->spin_max_ns = p->spin_ns = (uint64_t)cfg->spin_max_us * 1000;
	p->last_work_ns = 0;
	/* a synthetic port has no NAPI context to drive */
	p->busy_poll = cfg->busy_poll && cfg->xsk_fd >= 0;
	p->freelist = ctl_freelist(&c->v, id);
	p->peer_efd = PyMem_Calloc(n, sizeof(int));
	p->fwd_in = PyMem_Calloc(4 * (size_t)n, sizeof(struct fp_ring *));
	p->wake = PyMem_Calloc(n, 1);
	p->ret_pending = PyMem_Calloc(n, sizeof(uint32_t));
	p->fwd_pending = PyMem_Calloc(n, sizeof(uint32_t));
	if (!p->peer_efd || !p->fwd_in || !p->wake || !p->ret_pending || !p->fwd_pending) {
		Py_XDECREF(seq);
		PyErr_NoMemory();
		return -1;
	}
	p->redo = ctl_redo(&c->v, id);
	p->fwd_out = p->fwd_in + n;
	p->ret_in = p->fwd_in + 2 * n;
	p->ret_out = p->fwd_in + 3 * n;
	for (uint32_t w = 0; w < n; w++) {
		p->peer_efd[w] = seq ? (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, w)) : -1;
		p->fwd_in[w] = ctl_ring(&c->v, 0, w, id);
		p->fwd_out[w] = ctl_ring(&c->v, 0, id, w);
		p->ret_in[w] = ctl_ring(&c->v, 1, w, id);
		p->ret_out[w] = ctl_ring(&c->v, 1, id, w);
	}
	Py_XDECREF(seq);
	if (PyErr_Occurred())
		return -1;
	p->efd = p->peer_efd[id];

	p->umem_size = cfg->umem_size;
	p->umem = mmap(NULL, cfg->umem_size, PROT_READ | PROT_WRITE, MAP_SHARED, cfg->umem_fd, 0);
	if (p->umem == MAP_FAILED) {
		p->umem = NULL;
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	p->rx.size = cfg->rx;
	p->tx.size = cfg->tx;
	p->fill.size = cfg->fill;
	p->comp.size = cfg->comp;
	if (cfg->xsk_fd >= 0)
		err = map_xsk_rings(p, cfg->xsk_fd);
	else
		err = cfg->adopt ? synth_adopt(p, cfg->adopt) : synth_rings(p);
	if (!err)
		err = direct_open(p, cfg);
	if (err) {
		errno = -err;
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	port_recover(p);
	__atomic_store_n(&p->me->pid, (uint32_t)getpid(), __ATOMIC_RELAXED);
	__atomic_store_n(&p->me->state, FP_STATE_STARTING, __ATOMIC_RELEASE);
	port_load_rule(p);
	n = port_fill(p);
	port_commit(p);
	port_fill_wakeup(p, n);
	return 0;
}

/* Port(control, worker_id, xsk_fd, umem_fd, umem_size,
 *      (rx, tx, fill, completion), batch_size, spin, eventfds, *, busy_poll=False,
 *      spin_max_us=0) */
static int Port_init(PortObject *p, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"control", "worker_id", "xsk_fd", "umem_fd", "umem_size",
				 "ring_sizes", "batch_size", "spin", "eventfds", "busy_poll",
				 "spin_max_us", "direct_fds", NULL};
	struct port_cfg cfg = {0};
	unsigned long long umem_size;
	PyObject *control, *efds, *direct = NULL;
	int spin, busy_poll = 0;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O!IiiK(IIII)IpO|$pIO", kwlist,
					 &ControlType, &control, &cfg.id, &cfg.xsk_fd,
					 &cfg.umem_fd, &umem_size, &cfg.rx, &cfg.tx, &cfg.fill,
					 &cfg.comp, &cfg.batch, &spin, &efds, &busy_poll,
					 &cfg.spin_max_us, &direct))
		return -1;
	if (direct && direct != Py_None) {
		PyObject *seq = PySequence_Fast(direct, "direct_fds must be a sequence of fds");

		if (!seq)
			return -1;
		if (PySequence_Fast_GET_SIZE(seq) > FP_MAX_DIRECT) {
			Py_DECREF(seq);
			PyErr_Format(PyExc_ValueError, "at most %d direct sockets", FP_MAX_DIRECT);
			return -1;
		}
		cfg.n_direct_fd = (uint32_t)PySequence_Fast_GET_SIZE(seq);
		for (uint32_t j = 0; j < cfg.n_direct_fd; j++)
			cfg.direct_fd[j] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, j));
		Py_DECREF(seq);
		if (PyErr_Occurred())
			return -1;
	}
	if (cfg.spin_max_us > 100000) {
		PyErr_SetString(PyExc_ValueError, "spin_max_us out of range 0..100000");
		return -1;
	}
	/* synthetic rings are for microbench() only: a Port with no socket
	 * would sleep on nothing */
	if (cfg.xsk_fd < 0) {
		PyErr_SetString(PyExc_ValueError, "xsk_fd must be an AF_XDP socket");
		return -1;
	}
	cfg.umem_size = umem_size;
	cfg.spin = spin;
	cfg.busy_poll = busy_poll;
	return port_open(p, (ControlObject *)control, &cfg, efds);
}

static PyMethodDef Port_methods[] = {
	{"run", (PyCFunction)Port_run, METH_VARARGS,
	 "run(budget_us) -> 0 (budget used) or 1 (interrupted by a signal)"},
	{"heartbeat", (PyCFunction)Port_heartbeat, METH_NOARGS, NULL},
	{"report_usage", (PyCFunction)Port_report_usage, METH_VARARGS, NULL},
	{"rx_empty", (PyCFunction)Port_rx_empty, METH_NOARGS,
	 "rx_empty() -> True when nothing waits on the RX ring"},
	{"mark_draining", (PyCFunction)Port_mark_draining, METH_NOARGS,
	 "report DRAINING: RX done, still an egress for handoffs"},
	{"drained", (PyCFunction)Port_drained, METH_NOARGS,
	 "drained() -> True when nothing received, sent or lent is outstanding"},
	{"stop", (PyCFunction)Port_stop, METH_NOARGS, "report STOPPED to the supervisor"},
	{"close", (PyCFunction)Port_close, METH_NOARGS, NULL},
	{NULL}
};

static PyTypeObject PortType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "xdpd.datapath._fastpath.Port",
	.tp_basicsize = sizeof(PortObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Port(control, worker_id, xsk_fd, umem_fd, umem_size, ring_sizes, "
		  "batch_size, spin, eventfds, *, busy_poll=False): a worker's rings, "
		  "mapped; busy_poll: the socket has SO_PREFER_BUSY_POLL set and the "
		  "loop drives its NAPI context with recvfrom()/sendto()",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Port_init,
	.tp_dealloc = (destructor)Port_dealloc,
	.tp_methods = Port_methods,
};


/* ---------------------------------------------------------------------- */

/* The argv area the kernel shows in /proc/PID/cmdline: fields 48 and 49
 * (arg_start, arg_end) of /proc/self/stat. */
static int argv_area(unsigned long *start, unsigned long *end)
{
	char buf[2048], *p;
	FILE *f = fopen("/proc/self/stat", "r");
	size_t n;
	int field = 2;

	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');		/* comm may hold spaces */
	if (!p)
		return -1;
	while (*p && field < 48) {
		if (*p++ == ' ')
			field++;
	}
	return sscanf(p, " %lu %lu", start, end) == 2 ? 0 : -1;
}

/* set_proctitle(title): what ps and top show for this process.  Overwrites
 * the original argv strings in place (the interpreter keeps its own copy),
 * truncating to their length, and sets comm to the first 15 bytes. */
static PyObject *fp_set_proctitle(PyObject *self, PyObject *args)
{
	const char *title;
	unsigned long start, end;
	size_t room, len;

	if (!PyArg_ParseTuple(args, "s", &title))
		return NULL;
	prctl(PR_SET_NAME, (unsigned long)title, 0, 0, 0);
	if (argv_area(&start, &end) || end <= start)
		Py_RETURN_FALSE;
	room = end - start;
	len = strlen(title);
	if (len >= room)
		len = room - 1;
	memcpy((char *)start, title, len);
	memset((char *)start + len, 0, room - len);
	Py_RETURN_TRUE;
}

/*
 * classify(frame, matches) -> index of the first match (struct fp_match
 * bytes, as bpf.match_to_c() writes them) the frame fits, or len(matches):
 * the workers' own parser and matcher (port_classify's), on one frame, so
 * that tests hold it to the same tables as the XDP program's.
 */
static PyObject *fp_classify(PyObject *self, PyObject *args)
{
	Py_buffer frame;
	PyObject *matches, *seq;
	struct pkt_info pi;
	Py_ssize_t n, k;

	if (!PyArg_ParseTuple(args, "y*O", &frame, &matches))
		return NULL;
	seq = PySequence_Fast(matches, "matches must be a sequence of bytes");
	if (!seq) {
		PyBuffer_Release(&frame);
		return NULL;
	}
	n = PySequence_Fast_GET_SIZE(seq);
	pkt_parse(frame.buf, (uint32_t)frame.len, &pi);
	for (k = 0; k < n; k++) {
		PyObject *m = PySequence_Fast_GET_ITEM(seq, k);
		struct fp_match fm;

		if (!PyBytes_Check(m) || PyBytes_GET_SIZE(m) != sizeof(fm)) {
			PyErr_Format(PyExc_ValueError, "match %zd: expected %zu bytes of struct "
				     "fp_match", k, sizeof(fm));
			break;
		}
		memcpy(&fm, PyBytes_AS_STRING(m), sizeof(fm));
		if (match_fits(&fm, &pi))
			break;
	}
	Py_DECREF(seq);
	PyBuffer_Release(&frame);
	if (PyErr_Occurred())
		return NULL;
	return PyLong_FromSsize_t(k);
}

/* complete_checksum(frame: writable buffer) -> bool: what a worker does to
 * a frame from an interface with FP_NETDEV_CSUM_COMPLETE ("Partial
 * checksums"), in place; True if it completed a partial checksum. */
static PyObject *fp_complete_checksum(PyObject *self, PyObject *args)
{
	Py_buffer b;
	int done;

	if (!PyArg_ParseTuple(args, "w*", &b))
		return NULL;
	done = b.len <= UINT32_MAX ? csum_complete(b.buf, (uint32_t)b.len) : CSUM_LEFT;
	PyBuffer_Release(&b);
	return PyBool_FromLong(done == CSUM_COMPLETED);
}

/* The module's functions; the testing extension (testing/fastpath_testing.c)
 * has these too, and its own beside them. */
#define FP_METHODS \
	{"complete_checksum", fp_complete_checksum, METH_VARARGS, \
	 "complete_checksum(frame) -> bool: complete a partial TCP/UDP checksum in place"}, \
	{"classify", fp_classify, METH_VARARGS, \
	 "classify(frame, matches) -> index of the first fp_match the frame fits, or len(matches)"}, \
	{"control_size", fp_control_size, METH_VARARGS, \
	 "control_size(nworkers, frames_per_worker, frame_size, ring_entries) -> bytes"}, \
	{"set_proctitle", fp_set_proctitle, METH_VARARGS, NULL}


/* The module `def` describes, with the types and constants. */
static PyObject *fp_module_create(struct PyModuleDef *def)
{
	PyObject *m;

	if (PyType_Ready(&ControlType) < 0 || PyType_Ready(&PortType) < 0)
		return NULL;
	m = PyModule_Create(def);
	if (!m)
		return NULL;
	Py_INCREF(&ControlType);
	PyModule_AddObject(m, "Control", (PyObject *)&ControlType);
	Py_INCREF(&PortType);
	PyModule_AddObject(m, "Port", (PyObject *)&PortType);
	PyModule_AddIntConstant(m, "STATE_NONE", FP_STATE_NONE);
	PyModule_AddIntConstant(m, "STATE_STARTING", FP_STATE_STARTING);
	PyModule_AddIntConstant(m, "STATE_RUNNING", FP_STATE_RUNNING);
	PyModule_AddIntConstant(m, "STATE_STOPPED", FP_STATE_STOPPED);
	PyModule_AddIntConstant(m, "STATE_DRAINING", FP_STATE_DRAINING);
	PyModule_AddIntConstant(m, "MAX_NETDEVS", FP_MAX_NETDEVS);
	PyModule_AddIntConstant(m, "MAX_WORKERS", FP_MAX_WORKERS);
	{
		PyObject *names = PyTuple_New(FP_DROP__MAX);

		for (int r = 0; r < FP_DROP__MAX; r++)
			PyTuple_SET_ITEM(names, r, PyUnicode_FromString(drop_reason_names[r]));
		PyModule_AddObject(m, "DROP_REASONS", names);
	}
	return m;
}

#ifndef FP_TESTING
static PyMethodDef fp_methods[] = {
	FP_METHODS,
	{NULL}
};

static struct PyModuleDef fp_module = {
	.m_base = PyModuleDef_HEAD_INIT,
	.m_name = "_fastpath",
	.m_doc = "xdpd per-packet loop",
	.m_size = -1,
	.m_methods = fp_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
	return fp_module_create(&fp_module);
}
#endif
