/*
 * The fast path's test and measurement harness, as its own extension,
 * `_fastpath_testing`: microbench() (the workers' loop on synthetic rings,
 * timed: bench/fastpath_micro.py) and fuzz() (the same loop against a lying
 * kernel, lying peers and killed workers, every frame and packet checked:
 * tests/fuzz_fastpath.py).  Never part of the installed package: the
 * workers load xdpd/datapath/_fastpath.c alone.
 *
 * It includes the fast path's source (_fastpath.c, the one translation unit,
 * which includes ring.h ... port.c), so that what it times and fuzzes is
 * the workers' own loop, inlined as in the product, static functions and
 * all; and it exports everything _fastpath does (an AddressSanitizer build
 * of this file serves as the whole module: tests/fuzz_fastpath.py).
 * Built by `make build` (testing/build.py), never by setup.py.
 *
 * Over 800 lines (the microbenchmark, and the fuzzer with its emulated
 * kernel, peers and checks): left whole when the fast path was split into
 * units, so that bench/fastpath_micro.py timed the same harness code before
 * and after that split.
 */
#define FP_TESTING
#include "_fastpath.c"

/*
 * microbench() and fuzz() take the Control of either module: this one's,
 * or the product's (bench/fastpath_micro.py formats its area through
 * xdpd.shared_umem): one source, so one layout, which the size checks.
 */
static ControlObject *testing_control(PyObject *o)
{
	if (PyObject_TypeCheck(o, &ControlType) ||
	    (strcmp(Py_TYPE(o)->tp_name, ControlType.tp_name) == 0 &&
	     Py_TYPE(o)->tp_basicsize == ControlType.tp_basicsize))
		return (ControlObject *)o;
	PyErr_Format(PyExc_TypeError, "control must be a %s, not %s", ControlType.tp_name,
		     Py_TYPE(o)->tp_name);
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* Microbenchmark: the workers' loop on synthetic rings                    */

/*
 * A port over synthetic rings (port_open with xsk_fd -1) runs the very
 * port_step() a worker runs; a small "kernel" on this side of the rings
 * does what the driver would: it completes whatever the port put on its TX
 * ring, and turns FILL addresses into received packets.  Nothing in it
 * ever sets a need_wakeup flag, so the loop makes no syscall and what is
 * timed is the loop itself: its ring handling, table lookup, MAC rewrite
 * and handoffs, with nothing of the kernel's cost.
 */
#define EMU_HEADROOM	256	/* XDP_PACKET_HEADROOM: copy mode's packet offset */
#define EMU_MIN_LEN	60	/* ETH_ZLEN: the shortest frame on the wire, less FCS */

/* The packet in every frame: 02:00:00:00:00:01 -> 02:00:00:00:00:02,
 * IPv4 198.18.0.1 -> 198.19.0.1 (RFC 2544's benchmark range), UDP 1024 ->
 * 9 (discard), zero payload. */
static const uint8_t emu_macs[2 * ETH_ALEN] = {
	0x02, 0, 0, 0, 0, 0x02,		/* destination */
	0x02, 0, 0, 0, 0, 0x01,		/* source */
};

/* The packet's first len bytes (fragment 0 of a chain); its headers say
 * total (len without chains). */
static void emu_build_frame(uint8_t *f, uint32_t len, uint32_t total)
{
	uint8_t *ip = f + ETH_HLEN, *udp = ip + 20;
	uint32_t sum = 0;

	memset(f, 0, len);
	memcpy(f, emu_macs, sizeof(emu_macs));
	f[12] = 0x08;			/* ETH_P_IP */
	ip[0] = 0x45;			/* IPv4, 20-byte header */
	ip[2] = (total - ETH_HLEN) >> 8;
	ip[3] = (total - ETH_HLEN) & 0xff;
	ip[8] = 64;			/* TTL */
	ip[9] = 17;			/* UDP */
	ip[12] = 198, ip[13] = 18, ip[14] = 0, ip[15] = 1;
	ip[16] = 198, ip[17] = 19, ip[18] = 0, ip[19] = 1;
	for (int i = 0; i < 20; i += 2)
		sum += (uint32_t)ip[i] << 8 | ip[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	ip[10] = (uint8_t)(~sum >> 8);
	ip[11] = (uint8_t)~sum;
	udp[0] = 1024 >> 8;
	udp[3] = 9;
	udp[4] = (total - ETH_HLEN - 20) >> 8;
	udp[5] = (total - ETH_HLEN - 20) & 0xff;
	/* UDP checksum 0: none, which IPv4 allows */
}

/* The driver's TX side: everything on the TX ring is sent at once and its
 * address put on the COMPLETION ring, as far as that has room. */
static uint32_t emu_transmit(PortObject *p)
{
	struct ring *tx = &p->tx, *cq = &p->comp;
	const struct xdp_desc *txd = tx->descs;
	uint64_t *addrs = cq->descs;
	uint32_t cons = *tx->consumer;		/* the kernel's own indexes */
	uint32_t cq_prod = *cq->producer;
	uint32_t n = load_acquire(tx->producer) - cons;
	uint32_t room = cq->size - (cq_prod - load_acquire(cq->consumer));

	if (n > room)
		n = room;
	if (!n)
		return 0;
	for (uint32_t i = 0; i < n; i++)
		addrs[(cq_prod + i) & cq->mask] = txd[(cons + i) & tx->mask].addr;
	store_release(tx->consumer, cons + n);
	store_release(cq->producer, cq_prod + n);
	return n;
}

/* The driver's RX side: up to max packets of frags descriptors (1: no
 * chain), a FILL buffer each at EMU_HEADROOM, as copy mode fills them:
 * all but the last whole (the frame less its headroom), the last len
 * bytes, XDP_PKT_CONTD on all but the last; whole packets only.  The
 * frames hold the packet already; only fragment 0's MAC addresses are
 * written again, as a freshly received packet has them, so that a rewrite
 * the port did to the frame's previous packet (a swap above all) does not
 * carry over. */
static uint32_t emu_receive(PortObject *p, uint32_t max, uint32_t frags, uint32_t len)
{
	struct ring *fq = &p->fill, *rx = &p->rx;
	const uint64_t *addrs = fq->descs;
	struct xdp_desc *rxd = rx->descs;
	uint32_t cons = *fq->consumer;
	uint32_t prod = *rx->producer;
	uint32_t n = load_acquire(fq->producer) - cons;
	uint32_t room = rx->size - (prod - load_acquire(rx->consumer));

	if (n > room)
		n = room;
	n /= frags;
	if (n > max)
		n = max;
	for (uint32_t i = 0; i < n * frags; i++) {
		uint64_t addr = (addrs[(cons + i) & fq->mask] & p->frame_mask) + EMU_HEADROOM;
		struct xdp_desc *d = &rxd[(prod + i) & rx->mask];
		uint32_t j = i % frags;

		if (j == 0)
			memcpy(p->umem + addr, emu_macs, sizeof(emu_macs));
		d->addr = addr;
		d->len = j + 1 < frags ? p->frame_size - EMU_HEADROOM : len;
		d->options = j + 1 < frags ? XDP_PKT_CONTD : 0;
	}
	store_release(fq->consumer, cons + n * frags);
	store_release(rx->producer, prod + n * frags);
	return n;
}

static uint64_t port_drops(PortObject *p)
{
	uint64_t sum = 0;

	for (int r = 0; r < FP_DROP__MAX; r++)
		sum += p->st.drops[r];
	return sum;
}

/* Every packet sent or dropped, and every frame back home. */
static bool emu_settled(PortObject **ports, uint32_t n, uint64_t handled, uint64_t packets)
{
	if (handled != packets)
		return false;
	for (uint32_t w = 0; w < n; w++) {
		if (ports[w]->n_tx || ports[w]->n_handoff)
			return false;
	}
	return true;
}

/* What one clock_gettime(CLOCK_MONOTONIC) costs here, in ns. */
static double clock_cost_ns(void)
{
	uint64_t t0 = now_ns(), t1;

	for (int i = 0; i < 10000; i++)
		now_ns();
	t1 = now_ns();
	return (double)(t1 - t0) / 10001.0;
}

PyDoc_STRVAR(fp_microbench_doc,
"microbench(control, umem_fd, umem_size, ring_sizes, batch, packets, pkt_len,\n"
"           ingress, *, frags=1, max_segs=0) -> dict\n"
"\n"
"Run the workers' fast path (port_step: port_iterate and its bookkeeping)\n"
"on synthetic AF_XDP rings, all in this thread, no syscalls.\n"
"\n"
"control     a Control freshly format()ted (every frame on its free list),\n"
"            with set_worker() done and the table written: the table decides\n"
"            the scenario (forward to oneself or to a peer, MAC rewrite, drop)\n"
"umem_fd     memfd of the UMEM, umem_size bytes, at least\n"
"            nworkers * frames_per_worker * frame_size\n"
"ring_sizes  (rx, tx, fill, completion) of every port, powers of two\n"
"batch       the ports' batch_size\n"
"packets     how many packets the emulated kernel delivers, in all\n"
"pkt_len     bytes per packet, 60 .. frame_size - 256 (with frags: its last\n"
"            fragment's)\n"
"ingress     worker ids whose RX rings get packets\n"
"frags       descriptors per packet (descriptor chains): all but the last\n"
"            whole (frame_size - 256 bytes), the last pkt_len; needs\n"
"            max_segs >= frags when more than 1\n"
"max_segs    the ports' (0: no chains; 2..64, at most batch)\n"
"\n"
"Every UMEM frame is first filled with an Ethernet/IPv4/UDP packet at\n"
"offset 256 (copy mode's headroom).  Then, in rounds, for each worker:\n"
"the emulated kernel moves its TX ring to its COMPLETION ring and, for an\n"
"ingress worker, its FILL ring to its RX ring (addr = frame + 256,\n"
"len = pkt_len); then the port takes one loop step.  The run ends when\n"
"all packets are transmitted or dropped and every frame is back with its\n"
"home worker.  CLOCK_MONOTONIC is read between the emulator and the\n"
"port, so each timed step includes about one clock read (ns_clock);\n"
"with batch 64 that is a fraction of a ns per packet.\n"
"\n"
"Returns {packets, transmitted, dropped, frags, iterations (port steps), rounds,\n"
"ns_fastpath (inside port steps), ns_emulator (everything else in the\n"
"loop), ns_clock, headroom, frame (the packet as received, fragment 0's bytes),\n"
"workers (each worker's worker_stats() dict)}.  The control area is left\n"
"as the run ends: counters, and frames still on the synthetic FILL/RX\n"
"rings counted as rx; format() it again before the next run.");

/*
 * The ports of a synthetic run (microbench(), fuzz()): one per worker slot
 * of a freshly formatted control area, each over synthetic rings, all
 * RUNNING.  synth_stop() commits and stops them; synth_close() lets them
 * go (also after a failed synth_open()).
 */
struct synth {
	ControlObject *c;
	const struct ctl_view *v;
	struct fp_header *h;
	struct port_cfg cfg;	/* every port's, but for its id */
	uint32_t n;
	PortObject **ports;
};

static int synth_open(struct synth *s, ControlObject *c, const struct port_cfg *cfg)
{
	struct fp_header *h = ctl_hdr(&c->v);
	const struct ctl_view *v = &c->v;

	s->c = c;
	s->v = v;
	s->h = h;
	s->cfg = *cfg;
	for (uint32_t w = 0; w < h->nworkers; w++) {
		struct fp_counts k;

		if (ctl_counts(v, w, &k) || k.frames.free != h->frames_per_worker ||
		    k.frames.rx || k.frames.tx || k.frames.handoff) {
			PyErr_Format(PyExc_ValueError,
				     "worker %u does not hold all its frames: format() the "
				     "control area before each run", w);
			return -1;
		}
	}
	s->ports = PyMem_Calloc(h->nworkers, sizeof(*s->ports));
	if (!s->ports) {
		PyErr_NoMemory();
		return -1;
	}
	s->n = h->nworkers;
	for (uint32_t w = 0; w < s->n; w++) {
		s->ports[w] = (PortObject *)PortType.tp_alloc(&PortType, 0);
		if (!s->ports[w])
			return -1;
		s->cfg.id = w;
		if (port_open(s->ports[w], c, &s->cfg, NULL))
			return -1;
	}
	/* as Port.run does; a peer that is not RUNNING gets no handoffs */
	for (uint32_t w = 0; w < s->n; w++)
		__atomic_store_n(&s->ports[w]->me->state, FP_STATE_RUNNING, __ATOMIC_RELEASE);
	return 0;
}

static void synth_stop(struct synth *s)
{
	for (uint32_t w = 0; w < s->n; w++) {
		port_commit(s->ports[w]);
		__atomic_store_n(&s->ports[w]->me->state, FP_STATE_STOPPED, __ATOMIC_RELEASE);
	}
}

static void synth_close(struct synth *s)
{
	if (s->ports) {
		for (uint32_t w = 0; w < s->n; w++)
			Py_XDECREF(s->ports[w]);
	}
	PyMem_Free(s->ports);
	s->ports = NULL;
	s->n = 0;
}

/* over 80 lines: its timed loop is kept as is, for comparable bench numbers */
static PyObject *fp_microbench(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"control", "umem_fd", "umem_size", "ring_sizes", "batch",
				 "packets", "pkt_len", "ingress", "frags", "max_segs",
				 "drain_capture", NULL};
	struct port_cfg cfg = { .xsk_fd = -1 };
	unsigned long long umem_size, packets;
	unsigned int pkt_len, frags = 1, tmpl_len;
	PyObject *control, *ingress_obj, *seq, *workers = NULL, *frame = NULL, *result = NULL;
	struct synth s = { 0 };
	PortObject **ports;
	uint8_t *ingress = NULL, *tmpl = NULL;
	uint64_t left, transmitted = 0, handled, drops0 = 0, fp_ns = 0, emu_ns = 0;
	uint64_t rounds = 0, t, t1;
	uint32_t n = 0, stalled = 0;
	int drain = 0;			/* a reader that empties capture rings at once */
	ControlObject *c;
	struct fp_header *h;
	double clock_ns;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "OiK(IIII)IKIO|$IIp", kwlist,
					 &control, &cfg.umem_fd, &umem_size,
					 &cfg.rx, &cfg.tx, &cfg.fill, &cfg.comp, &cfg.batch,
					 &packets, &pkt_len, &ingress_obj, &frags, &cfg.max_segs,
					 &drain))
		return NULL;
	c = testing_control(control);
	if (!c)
		return NULL;
	if (ctl_check(c))
		return NULL;
	h = ctl_hdr(&c->v);
	n = h->nworkers;
	cfg.umem_size = umem_size;
	if (pkt_len < EMU_MIN_LEN || pkt_len + EMU_HEADROOM > h->frame_size)
		return PyErr_Format(PyExc_ValueError, "pkt_len %u out of range %d..%u", pkt_len,
				    EMU_MIN_LEN, h->frame_size - EMU_HEADROOM);
	if (!packets)
		return PyErr_Format(PyExc_ValueError, "packets must be positive");
	if (frags < 1 || frags > FP_MAX_SEGS || (frags > 1 && cfg.max_segs < frags))
		return PyErr_Format(PyExc_ValueError, "frags %u: 1..%d, and at most max_segs (%u)",
				    frags, FP_MAX_SEGS, cfg.max_segs);
	tmpl_len = frags > 1 ? h->frame_size - EMU_HEADROOM : pkt_len;

	ingress = PyMem_Calloc(n, 1);
	tmpl = PyMem_Malloc(tmpl_len);
	if (!ingress || !tmpl) {
		PyErr_NoMemory();
		goto out;
	}
	seq = PySequence_Fast(ingress_obj, "ingress must be a sequence of worker ids");
	if (!seq)
		goto out;
	for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
		long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, k));

		if (v < 0 || (uint32_t)v >= n) {
			if (!PyErr_Occurred())
				PyErr_Format(PyExc_ValueError, "ingress worker %ld out of range", v);
			Py_DECREF(seq);
			goto out;
		}
		ingress[v] = 1;
	}
	if (!PySequence_Fast_GET_SIZE(seq)) {
		PyErr_SetString(PyExc_ValueError, "no ingress worker");
		Py_DECREF(seq);
		goto out;
	}
	Py_DECREF(seq);

	if (synth_open(&s, c, &cfg))
		goto out;
	ports = s.ports;
	for (uint32_t w = 0; w < n; w++)
		drops0 += port_drops(ports[w]);
	/* Whatever frame the emulated kernel hands out holds a valid packet;
	 * this also faults the UMEM in before the clock starts. */
	emu_build_frame(tmpl, tmpl_len, (frags - 1) * (h->frame_size - EMU_HEADROOM) + pkt_len);
	for (uint64_t f = 0; f < (uint64_t)n * h->frames_per_worker; f++)
		memcpy(ports[0]->umem + f * h->frame_size + EMU_HEADROOM, tmpl, tmpl_len);
	clock_ns = clock_cost_ns();

	left = packets;
	t = now_ns();
	for (;;) {
		uint64_t moved = 0;

		for (uint32_t w = 0; w < n; w++) {
			PortObject *p = ports[w];
			uint32_t k = emu_transmit(p);

			transmitted += k;
			moved += k;
			if (ingress[w] && left) {
				uint32_t most = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;

				k = emu_receive(p, most, frags, pkt_len);
				left -= k;
				moved += k;
			}
			for (uint32_t sl = 0; drain && sl < FP_MAX_CAPTURES; sl++) {
				struct fp_capring *r = ctl_capring(p->v, w, sl);

				__atomic_store_n(&r->cons, r->prod, __ATOMIC_RELEASE);
			}
			t1 = now_ns();
			emu_ns += t1 - t;
			moved += port_step(p);
			t = now_ns();
			fp_ns += t - t1;
		}
		rounds++;
		if (!left) {
			handled = transmitted / frags;	/* descriptors: whole packets */
			for (uint32_t w = 0; w < n; w++)
				handled += port_drops(ports[w]);
			if (emu_settled(ports, n, handled - drops0, packets))
				break;
		}
		/* One thread, no clock in the state: a round that moved nothing
		 * leaves everything as it was, and so will every next one. */
		if (moved)
			stalled = 0;
		else if (++stalled > 16) {
			PyErr_Format(PyExc_RuntimeError,
				     "fast path stuck: %llu of %llu packets delivered, %llu sent",
				     packets - left, packets, transmitted / frags);
			break;
		}
		if (!(rounds & 1023)) {
			if (PyErr_CheckSignals())
				break;
			t = now_ns();
		}
	}

	synth_stop(&s);
	if (PyErr_Occurred())
		goto out;

	workers = PyList_New(n);
	if (!workers)
		goto out;
	for (uint32_t w = 0; w < n; w++) {
		PyObject *d = stats_dict(&ports[w]->st);

		if (!d)
			goto out;
		PyList_SET_ITEM(workers, w, d);
	}
	frame = PyBytes_FromStringAndSize((const char *)tmpl, tmpl_len);
	if (!frame)
		goto out;
	handled = 0;
	for (uint32_t w = 0; w < n; w++)
		handled += port_drops(ports[w]);
	result = Py_BuildValue("{sKsKsKsIsKsKsKsKsdsisOsO}",
			       "packets", packets,
			       "transmitted", (unsigned long long)(transmitted / frags),
			       "dropped", (unsigned long long)(handled - drops0), "frags", frags,
			       "iterations", (unsigned long long)(rounds * n),
			       "rounds", (unsigned long long)rounds,
			       "ns_fastpath", (unsigned long long)fp_ns,
			       "ns_emulator", (unsigned long long)emu_ns,
			       "ns_clock", clock_ns, "headroom", EMU_HEADROOM,
			       "frame", frame, "workers", workers);
out:
	Py_XDECREF(frame);
	Py_XDECREF(workers);
	synth_close(&s);
	PyMem_Free(ingress);
	PyMem_Free(tmpl);
	return result;
}

/* ---------------------------------------------------------------------- */
/* Fuzzing: the workers' loop against a lying kernel, lying peers, crashes */

/*
 * fuzz() drives the synthetic ports of microbench() with a seeded random
 * schedule, one action per step (fz_actions[]):
 *   - the emulated kernel behaving, a few entries at a time and in random
 *     order, so that frames stay in it a while: FILL buffers taken,
 *     packets received into them (random lengths and offsets), TX
 *     descriptors taken (sent), completions handed back;
 *   - a random port's loop step: port_step(), the workers' own;
 *   - a new forwarding table: forward to random egress lists, drop, no
 *     rule, MAC rewrites, VLAN push and pop, max_len;
 *   - with misbehave: the kernel lying (RX descriptors and completions
 *     with addresses of our frames at any offset, of another worker's,
 *     past the frames, past the UMEM, of frames it was given or holds
 *     already; lengths 0, runts, huge, past the frame's end; its
 *     producers and consumers jumping anywhere; need_wakeup flipped),
 *     peers lying (garbage entries and producers on the fwd and ret rings
 *     into a port, frames returned twice), tables and worker states of
 *     garbage;
 *   - with crash_every: a port killed at a random point of an iteration
 *     (fz_kill()) and, some steps later, a fresh port taking over its
 *     rings and slot through port_recover() (fz_revive()), while the
 *     kernel and the peers carry on;
 *   - with max_segs (descriptor chains, chain.c): half the packets the
 *     kernel delivers are chains of 2 to min(max_segs, 6) fragments, a
 *     FILL buffer each, published whole or not at all (an RX ring without
 *     room for every fragment drops the packet), a quarter of them with
 *     a partial TCP/UDP checksum to complete over every fragment; now and
 *     then a chain the ports must refuse, of buffers the kernel holds (no
 *     end within max_segs, a zero-length fragment, fragment 0 under
 *     FRAG0_MIN, a fragment past its frame: fz_bad_chain()), and a peer
 *     spoiling a chain it lent the same ways (fz_bad_fwd_chain()); the
 *     emulated wire takes whole chains only; with misbehave, the kernel and the
 *     peers also lie with chains (XDP_PKT_CONTD and RING_CONTD on every
 *     entry, none, any; fragments anywhere, of any length; a chain's head
 *     published without its tail).
 * The loop must never touch memory not its own: in a build with
 * AddressSanitizer fuzz() also poisons every byte no code has a reason to
 * touch (padding in the control area and the synthetic rings, the UMEM
 * past the last worker's frames), and the synthetic rings are heap blocks
 * with redzones around them.  Without misbehave the run is checked
 * exactly (fz_scan()), every check_every steps while no port is dead and
 * once more after everything settled: every frame in exactly one place
 * and every worker's committed counts agreeing with where its frames
 * are; every packet delivered sent exactly once, dropped, or on its way;
 * the committed counters agreeing with all of it.  A chain is one packet
 * there: sent once, as one run of descriptors with XDP_PKT_CONTD on all
 * but its last, its fragments in order and where they were delivered,
 * the bytes of every fragment after the first as the kernel wrote them
 * (fz_frag_bytes()), its checksum verifying where its ingress netdev
 * completes checksums and only there; on a ring, whole; a chain the
 * ports must refuse never leaves the ring it lied on but dropped whole,
 * once, as chain_invalid, its frames home, its bad fragments in
 * bad_descs; rx_frags and tx_descs
 * counting every descriptor.  A port that publishes half a chain, or
 * sends one with a CONTD pattern that is not its packet's, fails the run.
 */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define fz_poison(addr, len, on)						\
	((on) ? __asan_poison_memory_region((addr), (len))			\
	      : __asan_unpoison_memory_region((addr), (len)))
#else
#define fz_poison(addr, len, on)	((void)(addr), (void)(len), (void)(on))
#endif

#define FZ_ID_OFF	16	/* packet id in the frame: past the MACs a rule rewrites */
#define FZ_ID_ROOM	(FZ_ID_OFF + 8)
#define FZ_MAX_FRAGS	6	/* the behaving kernel's longest chain (max_segs less) */

enum fz_action {
	FZ_STEP,
	FZ_TAKE_FILL,
	FZ_RECEIVE,
	FZ_SEND,
	FZ_COMPLETE,
	FZ_TABLE,
	FZ_LIE_RX,
	FZ_LIE_COMP,
	FZ_LIE_INDEX,
	FZ_LIE_FWD,
	FZ_LIE_RET,
	FZ_LIE_PEER_INDEX,
	FZ_LIE_TABLE,
	FZ_LIE_STATE,
	/* with max_segs only (last, so that a run without chains draws as
	 * it did before they came) */
	FZ_BAD_CHAIN,
	FZ_LIE_CHAIN,
	FZ_LIE_FWD_CHAIN,
	FZ_BAD_FWD_CHAIN,
	FZ__MAX,
};

/* The kernel behaving outweighs every lie together, so that lies land on
 * ports in the middle of ordinary work (frames in every place), and a
 * port steps about as often as the kernel moves each of its rings.
 * kernel_bad_chain and peer_bad_chain are lies too, but made of frames
 * the liar holds, so that an exact run checks what becomes of them
 * (fz_bad_chain(), fz_bad_fwd_chain()). */
static const struct {
	const char *name;
	uint32_t weight;
	bool lie;
	bool chains;		/* only with max_segs */
} fz_actions[FZ__MAX] = {
	[FZ_STEP]		= { "step", 24 },
	[FZ_TAKE_FILL]		= { "kernel_take_fill", 8 },
	[FZ_RECEIVE]		= { "kernel_receive", 10 },
	[FZ_SEND]		= { "kernel_send", 8 },
	[FZ_COMPLETE]		= { "kernel_complete", 8 },
	[FZ_TABLE]		= { "table", 1 },
	[FZ_LIE_RX]		= { "kernel_bad_rx", 2, true },
	[FZ_LIE_COMP]		= { "kernel_bad_completion", 2, true },
	[FZ_LIE_INDEX]		= { "kernel_bad_index", 2, true },
	[FZ_LIE_FWD]		= { "peer_bad_fwd", 2, true },
	[FZ_LIE_RET]		= { "peer_bad_ret", 2, true },
	[FZ_LIE_PEER_INDEX]	= { "peer_bad_index", 1, true },
	[FZ_LIE_TABLE]		= { "bad_table", 1, true },
	[FZ_LIE_STATE]		= { "bad_state", 1, true },
	[FZ_BAD_CHAIN]		= { "kernel_bad_chain", 1, false, true },
	[FZ_LIE_CHAIN]		= { "kernel_lying_chain", 2, true, true },
	[FZ_LIE_FWD_CHAIN]	= { "peer_lying_chain", 2, true, true },
	[FZ_BAD_FWD_CHAIN]	= { "peer_bad_chain", 1, false, true },
};

/* Where fz_kill() stops a port (fastpath.h, "Crash consistency"). */
enum fz_kill {
	FZ_KILL_BEFORE_COMMIT,	/* iteration done, nothing committed */
	FZ_KILL_AT_COMMIT,	/* record and redo log written, not the word */
	FZ_KILL_PENDING,	/* commit point passed, no index published */
	FZ_KILL_MID_REDO,	/* commit point passed, part of the log applied */
	FZ_KILL_AFTER_COMMIT,	/* committed; only the port's own state is lost */
	FZ_KILL__MAX,
};

static const char *fz_kill_names[FZ_KILL__MAX] = {
	"before_commit", "at_commit_point", "commit_pending", "mid_redo", "after_commit",
};

/* A frame's location, for fz_scan(): kind << 16 | worker << 8 | peer */
enum fz_loc {
	FZ_LOC_FREE,		/* a's free list */
	FZ_LOC_FILL,		/* a's FILL ring */
	FZ_LOC_KFILL,		/* taken from a's FILL ring by the kernel */
	FZ_LOC_RX,		/* a's RX ring */
	FZ_LOC_TX,		/* a's TX ring */
	FZ_LOC_KTX,		/* taken from a's TX ring by the kernel */
	FZ_LOC_COMP,		/* a's COMPLETION ring */
	FZ_LOC_FWD,		/* fwd ring a -> b */
	FZ_LOC_RET,		/* ret ring a -> b */
	FZ_LOC_DTX,		/* a's direct TX ring b */
};
#define FZ_LOC(kind, a, b)	((uint32_t)(kind) << 16 | (uint32_t)(a) << 8 | (uint32_t)(b))
#define FZ_NOWHERE		UINT32_MAX

enum { FZ_FREE, FZ_RX, FZ_TX, FZ_HANDOFF };	/* struct fp_frames, in order */

struct fz_pkt {
	uint64_t addr;		/* where it (its fragment 0) was delivered */
	uint32_t total;		/* bytes, every fragment */
	uint16_t len;		/* fragment 0's */
	uint8_t nfrags;		/* descriptors: 1, or a chain's */
	uint8_t sent;
	uint8_t lie;		/* a chain the port must refuse: enum fz_lied */
	uint8_t bad;		/* of a lie's fragments, those bad_descs counts */
	uint8_t csum;		/* enum fz_csum */
	uint32_t seen;		/* the fz_scan() pass that last found it in flight */
};

/* Where a chain that lies was made to: it must be refused there. */
enum fz_lied {
	FZ_LIED_RX = 1,		/* on an RX ring (fz_bad_chain()) */
	FZ_LIED_FWD,		/* on a fwd ring (fz_bad_fwd_chain()) */
};

/* A chain with a partial TCP/UDP checksum (fz_csum_header()). */
enum fz_csum {
	FZ_CSUM_PARTIAL = 1,	/* carries one; its id is not in its bytes */
	FZ_CSUM_VERIFIES = 2,	/* must verify when sent: its ingress netdev
				 * completes checksums (or it verified already) */
};

/* By frame: what the kernel last delivered into it, the only delivery
 * whose marks there are not stale (a packet's id in fragment 0, the
 * pattern of fz_frag_bytes() in the others). */
struct fz_frame {
	uint64_t id;		/* the packet */
	uint32_t len;		/* this fragment's */
	uint16_t off;		/* where in the frame it starts */
	uint8_t j;		/* which of the packet's fragments */
};

/* Packets on their way (RX, fwd or TX rings), as fz_scan() found them:
 * packets, their bytes (not a lie's: the port never counts them) and
 * descriptors. */
struct fz_way {
	uint64_t packets, bytes, frags;
};

/* The emulated kernel's side of one socket. */
struct fz_kernel {
	uint64_t *fill;		/* FILL buffers taken, not received into yet */
	uint64_t *tx;		/* TX descriptors taken (sent), not completed yet */
	uint32_t n_fill, n_tx;
};

struct fuzz {
	struct synth s;
	PortObject **ports;	/* s.ports */
	const struct ctl_view *v;
	struct fp_header *h;
	uint32_t n, fpw, fs, entries, ndevs;
	uint64_t span, frames_end, umem_size, nframes;
	uint64_t seed, rng, step;
	bool lie, exact;
	uint32_t crash_every;
	uint32_t max_segs;	/* the ports' (0: no chains) */
	struct fz_kernel *k;
	uint32_t kcap;		/* a kernel side can hold every frame */
	uint32_t *dead;		/* steps until the replacement starts; 0: alive */
	uint32_t n_dead;
	struct fz_pkt *pkts;	/* by id - 1 */
	uint64_t n_pkts, cap_pkts, sent;
	uint64_t bytes_delivered, bytes_sent;
	uint64_t frags_delivered, frags_sent, chains;
	uint64_t csums;		/* partial checksums checked when sent */
	uint64_t n_lies, bad_delivered;	/* fz_bad_chain(): chains, bad fragments */
	uint64_t fwd_lies, fwd_bad;	/* fz_bad_fwd_chain()'s */
	struct fp_stats st0;	/* the counters' sums before the run */
	uint64_t actions[FZ__MAX], kills[FZ_KILL__MAX], scans;
	/* fz_scan() */
	uint32_t *where;
	struct fz_frame *fr;	/* by frame */
	uint64_t (*cnt)[4];
	uint32_t pass;
	struct fz_way on_rx, on_fwd, on_tx;	/* packets on their way */
	uint64_t lies_on_rx, bad_on_rx;		/* fz_bad_chain()'s, not refused yet */
	uint64_t lies_on_fwd, bad_on_fwd;	/* fz_bad_fwd_chain()'s */
};

/* xorshift64* (Vigna, "An experimental exploration of Marsaglia's
 * xorshift generators"): a run is reproduced from its seed alone. */
static inline uint64_t fz_rand(struct fuzz *fz)
{
	uint64_t x = fz->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	fz->rng = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static inline uint32_t fz_below(struct fuzz *fz, uint64_t n)
{
	return n ? (uint32_t)(fz_rand(fz) % n) : 0;
}

static int fz_fail(struct fuzz *fz, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int fz_fail(struct fuzz *fz, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!PyErr_Occurred())
		PyErr_Format(PyExc_RuntimeError, "fuzz seed %llu, step %llu: %s",
			     (unsigned long long)fz->seed, (unsigned long long)fz->step, msg);
	return -1;
}

static const char *fz_loc_name(uint32_t loc, char *buf, size_t len)
{
	static const char *fmt[] = {
		[FZ_LOC_FREE] = "worker %u's free list",
		[FZ_LOC_FILL] = "worker %u's FILL ring",
		[FZ_LOC_KFILL] = "the kernel (a FILL buffer of worker %u's)",
		[FZ_LOC_RX] = "worker %u's RX ring",
		[FZ_LOC_TX] = "worker %u's TX ring",
		[FZ_LOC_KTX] = "the kernel (sending for worker %u)",
		[FZ_LOC_COMP] = "worker %u's COMPLETION ring",
		[FZ_LOC_FWD] = "the fwd ring %u -> %u",
		[FZ_LOC_RET] = "the ret ring %u -> %u",
		[FZ_LOC_DTX] = "worker %u's direct TX ring %u",
	};

	snprintf(buf, len, fmt[loc >> 16], (loc >> 8) & 0xff, loc & 0xff);
	return buf;
}

/* ASan: poison what nobody may touch; unpoison before anything is freed
 * or unmapped, and before returning to Python. */
static void fz_poison_area(struct fuzz *fz, bool on)
{
	struct fp_header *h = fz->h;

	fz_poison(h, h->total_size, on);
	if (!on)
		return;
	fz_poison(h, sizeof(*h), false);
	for (uint32_t w = 0; w < fz->n; w++) {
		fz_poison(ctl_worker(fz->v, w), sizeof(struct fp_worker), false);
		fz_poison(ctl_redo(fz->v, w), FP_REDO_MAX(fz->n) * sizeof(struct fp_redo), false);
		fz_poison(ctl_freelist(fz->v, w), (size_t)fz->fpw * 8, false);
	}
	for (int ret = 0; ret < 2; ret++) {
		for (uint32_t a = 0; a < fz->n; a++) {
			for (uint32_t b = 0; b < fz->n; b++) {
				struct fp_ring *r = ctl_ring(fz->v, ret, a, b);

				fz_poison(&r->prod, sizeof(r->prod), false);
				fz_poison(&r->cons, sizeof(r->cons), false);
				fz_poison(r->slots, (size_t)fz->entries * 8, false);
			}
		}
	}
	fz_poison(ctl_table(fz->v, 0), sizeof(struct fp_table), false);
	fz_poison(ctl_table(fz->v, 1), sizeof(struct fp_table), false);
}

static void fz_poison_port(struct fuzz *fz, PortObject *p, bool on)
{
	const struct xdp_ring_offset *o = &synth_ring_off;
	struct ring *rings[4] = { &p->fill, &p->comp, &p->rx, &p->tx };

	if (p->umem && fz->umem_size > fz->frames_end)
		fz_poison(p->umem + fz->frames_end, fz->umem_size - fz->frames_end, on);
	for (int i = 0; i < 4; i++) {
		char *m = rings[i]->map;

		if (!m || !rings[i]->heap)
			continue;
		fz_poison(m + o->producer + 4, o->consumer - o->producer - 4, on);
		fz_poison(m + o->consumer + 4, o->flags - o->consumer - 4, on);
		fz_poison(m + o->flags + 4, o->desc - o->flags - 4, on);
	}
}

/* ---- the kernel, behaving ---- */

/* FILL buffers into the kernel's hands. */
/* The port whose FILL and COMPLETION rings serve x's socket: x, or the
 * owner of x's fanout group (its emulated kernel side is the group's). */
static inline uint32_t fz_owner(struct fuzz *fz, uint32_t x)
{
	return fz->ports[x]->owner;
}

static uint32_t fz_take_fill(struct fuzz *fz, uint32_t member, uint32_t max)
{
	uint32_t x = fz_owner(fz, member);	/* the group's FILL ring is the owner's */
	struct ring *fq = &fz->ports[x]->fill;
	struct fz_kernel *k = &fz->k[x];
	const uint64_t *a = fq->descs;
	uint32_t cons = *fq->consumer, avail = load_acquire(fq->producer) - cons, n;

	if (avail > fq->size) {
		if (fz->exact)
			return fz_fail(fz, "worker %u's FILL ring: producer %u is %u past the "
				       "consumer, more than its %u slots", x, cons + avail,
				       avail, fq->size), 0;
		avail = fq->size;
	}
	n = avail < max ? avail : max;
	if (n > fz->kcap - k->n_fill)
		n = fz->kcap - k->n_fill;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t addr = a[(cons + i) & fq->mask];

		if (fz->exact && (addr - x * fz->span >= fz->span || (addr & (fz->fs - 1))))
			return fz_fail(fz, "worker %u put %#llx on its FILL ring: not the start "
				       "of one of its frames", x, (unsigned long long)addr), 0;
		k->fill[k->n_fill++] = addr;
	}
	store_release(fq->consumer, cons + n);
	return n;
}

/* A new packet of an exact run: its id (its record zeroed); 0: no memory. */
static uint64_t fz_new_pkt(struct fuzz *fz)
{
	if (fz->n_pkts == fz->cap_pkts) {
		uint64_t cap = fz->cap_pkts ? 2 * fz->cap_pkts : 65536;
		struct fz_pkt *m = PyMem_Realloc(fz->pkts, cap * sizeof(*m));

		if (!m)
			return PyErr_NoMemory(), 0;
		fz->pkts = m;
		fz->cap_pkts = cap;
	}
	fz->pkts[fz->n_pkts] = (struct fz_pkt){ 0 };
	return ++fz->n_pkts;
}

/* The bytes of fragment j >= 1 of packet id, 8 at a time: written
 * (check false), or compared with what was written (true: whether they
 * are the same).  No other fragment has them, so one that was moved,
 * cut short or written over shows. */
static bool fz_frag_bytes(uint8_t *b, uint32_t len, uint64_t id, uint32_t j, bool check)
{
	for (uint32_t at = 0; at < len; at += 8) {
		uint64_t v = (id << 8 | j) * 0x9e3779b97f4a7c15ULL + at * 0xbf58476d1ce4e5b9ULL;
		uint32_t n = len - at < 8 ? len - at : 8;

		if (!check)
			memcpy(b + at, &v, n);
		else if (memcmp(b + at, &v, n))
			return false;
	}
	return true;
}

/* A packet of one descriptor: copy mode's headroom mostly, anywhere that
 * leaves room for the packet id sometimes; runts, up to the frame's end,
 * anything between. */
static void fz_one_draw(struct fuzz *fz, uint32_t *off, uint32_t *len)
{
	uint32_t room;

	*off = fz_below(fz, 4) ? EMU_HEADROOM : fz_below(fz, fz->fs - FZ_ID_ROOM + 1);
	room = fz->fs - *off;
	switch (fz_below(fz, 16)) {
	case 0:
		*len = fz_below(fz, ETH_HLEN);		/* a runt */
		break;
	case 1:
		*len = room;				/* up to the frame's end */
		break;
	default:
		*len = room > EMU_MIN_LEN ? EMU_MIN_LEN + fz_below(fz, room - EMU_MIN_LEN + 1)
					  : fz_below(fz, room + 1);
	}
}

/* Fragment j of a chain of nf, as the kernel fills them: fragment 0 first
 * and never shorter than FRAG0_MIN, at the headroom mostly; the others
 * anywhere in their frames; all but the last whole mostly (up to the
 * frame's end), the last of any length. */
static void fz_frag_draw(struct fuzz *fz, uint32_t j, uint32_t nf, uint32_t *off, uint32_t *len)
{
	uint32_t room;

	if (j == 0)
		*off = fz_below(fz, 4) ? EMU_HEADROOM : fz_below(fz, fz->fs - FRAG0_MIN + 1);
	else
		*off = fz_below(fz, 4) ? EMU_HEADROOM : fz_below(fz, fz->fs);
	room = fz->fs - *off;
	if (j + 1 < nf && fz_below(fz, 2))
		*len = room;
	else if (j == 0)
		*len = FRAG0_MIN + fz_below(fz, room - FRAG0_MIN + 1);
	else
		*len = 1 + fz_below(fz, room);
}

/*
 * Fragment j of packet id (0: none, not an exact run) delivered into the
 * frame at base, off bytes in, len long: fragment 0 gets the MACs, an
 * ethertype (for pop_vlan) and the packet's id, the others the bytes of
 * fz_frag_bytes(); the packet and the frame record it.  A FILL entry the
 * lying kernel made up may lie anywhere: nothing is written there.
 */
static void fz_frag_mark(struct fuzz *fz, uint64_t base, uint32_t off, uint32_t len, uint64_t id,
			 uint32_t j)
{
	uint8_t *pkt = fz->ports[0]->umem + base + off;
	struct fz_pkt *pk = id ? &fz->pkts[id - 1] : NULL;

	if (base >= fz->frames_end)
		return;
	if (j == 0) {
		uint16_t type = htons(fz_below(fz, 2) ? 0x0800 : 0x8100);

		memcpy(pkt, emu_macs, sizeof(emu_macs));
		memcpy(pkt + 2 * ETH_ALEN, &type, sizeof(type));	/* for pop_vlan */
		if (pk)
			memcpy(pkt + FZ_ID_OFF, &id, sizeof(id));
	} else if (pk && off + len <= fz->fs) {
		fz_frag_bytes(pkt, len, id, j, false);
	}
	if (!pk)
		return;
	if (j == 0) {
		pk->addr = base + off;
		pk->len = (uint16_t)len;
	}
	pk->total += len;
	fz->fr[base / fz->fs] = (struct fz_frame){ .id = id, .len = len, .off = (uint16_t)off,
						   .j = (uint8_t)j };
}

/* The longest chain the behaving kernel delivers. */
static inline uint32_t fz_most_frags(const struct fuzz *fz)
{
	return fz->max_segs < FZ_MAX_FRAGS ? fz->max_segs : FZ_MAX_FRAGS;
}

/*
 * The ones' complement sum a receiver checks a chain's TCP or UDP checksum
 * with (RFC 1071, byte by byte: not parse.h's code): the pseudo header
 * from the IPv4 header in fragment 0 (after up to two VLAN tags), then the
 * segment, across the n descriptors in d.  0xffff: it verifies; 0: no
 * IPv4 header fragment 0 holds whole, or a segment longer than the chain.
 */
static uint16_t fz_l4_sum(struct fuzz *fz, const struct xdp_desc *d, uint32_t n)
{
	const uint8_t *p = fz->ports[0]->umem + d[0].addr, *ip;
	uint32_t off = 2 * ETH_ALEN, seg, k = 0;
	uint64_t sum = 0;

	for (int tags = 0; tags < 2 && off + 2 <= d[0].len; tags++) {
		uint16_t t = p[off] << 8 | p[off + 1];

		if (t != 0x8100 && t != 0x88a8)
			break;
		off += VLAN_HLEN;
	}
	ip = p + off + 2;
	if (off + 2 + 20 + 20 > d[0].len || ip[0] != 0x45 || (ip[2] << 8 | ip[3]) < 20)
		return 0;
	seg = (ip[2] << 8 | ip[3]) - 20;
	for (int i = 12; i < 20; i += 2)
		sum += ip[i] << 8 | ip[i + 1];
	sum += ip[9] + seg;
	for (uint32_t j = 0; j < n && k < seg; j++) {
		const uint8_t *b = j ? fz->ports[0]->umem + d[j].addr : ip + 20;
		uint32_t len = j ? d[j].len : d[0].len - (off + 2 + 20);

		for (uint32_t i = 0; i < len && k < seg; i++, k++)
			sum += k & 1 ? b[i] : (uint32_t)b[i] << 8;
	}
	if (k < seg)
		return 0;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/*
 * Fragment 0 of a chain made an IPv4 UDP or TCP packet of total bytes as
 * a local stack leaves it for the device to finish (CHECKSUM_PARTIAL, a
 * veth's): the checksum field holds the folded pseudo-header sum, not
 * complemented; the segment runs on over every fragment.  A port of a
 * netdev that completes checksums (odd netdevs: fz_table()) completes it
 * over all of them (csum_complete_sg()); fz_check_sent() sees that it
 * verifies then (fz_l4_sum()), and does not otherwise.
 */
static void fz_csum_header(struct fuzz *fz, const struct xdp_desc *d, uint32_t total)
{
	uint8_t *pkt = fz->ports[0]->umem + d[0].addr, *ip = pkt + ETH_HLEN, *l4 = ip + 20;
	uint32_t seg = total - ETH_HLEN - 20, sum = 0, field = fz_below(fz, 2) ? 6 : 16;

	pkt[12] = 0x08, pkt[13] = 0x00;
	memset(ip, 0, 20 + 20);
	ip[0] = 0x45;
	ip[2] = (uint8_t)((total - ETH_HLEN) >> 8), ip[3] = (uint8_t)(total - ETH_HLEN);
	ip[8] = 64;
	ip[9] = field == 6 ? 17 : 6;
	for (int i = 12; i < 20; i++)
		ip[i] = (uint8_t)fz_rand(fz);
	l4[1] = 9, l4[3] = 9;			/* ports */
	if (ip[9] == 17)
		l4[4] = (uint8_t)(seg >> 8), l4[5] = (uint8_t)seg;
	else
		l4[12] = 0x50;			/* TCP: a 20-byte header */
	for (int i = 12; i < 20; i += 2)
		sum += ip[i] << 8 | ip[i + 1];
	sum += ip[9] + seg;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	l4[field] = (uint8_t)(sum >> 8), l4[field + 1] = (uint8_t)sum;
}

/* Packets into FILL buffers the kernel holds, onto the RX ring: with
 * max_segs, half of them chains of 2 or more (a buffer each, XDP_PKT_CONTD
 * on all but the last), a quarter of those with a partial checksum.
 * Whole packets only: one the RX ring has no room for all of is dropped
 * (its buffers stay the kernel's), as the kernel's multi-buffer receive
 * does. */
static uint32_t fz_receive(struct fuzz *fz, uint32_t x, uint32_t max)
{
	PortObject *p = fz->ports[x];
	struct ring *rx = &p->rx;
	struct fz_kernel *k = &fz->k[fz_owner(fz, x)];	/* the group's FILL buffers */
	struct xdp_desc *rxd = rx->descs;
	uint32_t prod = *rx->producer, used = prod - load_acquire(rx->consumer), room, n = 0;

	if (used > rx->size) {
		if (fz->exact)
			return fz_fail(fz, "worker %u's RX consumer is past its producer %u", x,
				       prod), 0;
		return 0;
	}
	room = rx->size - used;
	for (uint32_t pkts = 0; pkts < max; pkts++) {
		uint32_t nf = fz->max_segs && !fz_below(fz, 2) ? 2 + fz_below(fz, fz_most_frags(fz) - 1)
							       : 1, total = 0;
		struct xdp_desc d[FZ_MAX_FRAGS];
		uint64_t id = 0, base[FZ_MAX_FRAGS];

		if (nf > room - n || nf > k->n_fill)
			break;
		if (fz->exact && !(id = fz_new_pkt(fz)))
			return 0;
		for (uint32_t j = 0; j < nf; j++) {
			uint32_t b = fz_below(fz, k->n_fill), off, len;

			base[j] = k->fill[b] & ~((uint64_t)fz->fs - 1);
			k->fill[b] = k->fill[--k->n_fill];
			if (nf == 1)
				fz_one_draw(fz, &off, &len);
			else
				fz_frag_draw(fz, j, nf, &off, &len);
			d[j] = (struct xdp_desc){ .addr = base[j] + off, .len = len,
						  .options = j + 1 < nf ? XDP_PKT_CONTD : 0 };
			total += len;
		}
		for (uint32_t j = 0; j < nf; j++)
			fz_frag_mark(fz, base[j], d[j].addr - base[j], d[j].len, id, j);
		if (nf > 1 && !fz_below(fz, 4) && base[0] < fz->frames_end) {
			fz_csum_header(fz, d, total);
			/* what it must be when sent (an exact run's fragments
			 * are all in frames, for fz_l4_sum() to read) */
			if (id)
				fz->pkts[id - 1].csum = FZ_CSUM_PARTIAL |
					((ctl_assign(fz->v, x)->netdev & 1) ||
					 fz_l4_sum(fz, d, nf) == 0xffff ? FZ_CSUM_VERIFIES : 0);
		}
		for (uint32_t j = 0; j < nf; j++)
			rxd[(prod + n++) & rx->mask] = d[j];
		if (id) {
			fz->pkts[id - 1].nfrags = (uint8_t)nf;
			fz->bytes_delivered += total;
			fz->frags_delivered += nf;
			fz->chains += nf > 1;
		}
	}
	store_release(rx->producer, prod + n);
	return n;
}

/*
 * The packet an exact run delivered whose bytes start at addr (in a frame):
 * where it was delivered (*shift 0), or 4 bytes on for a pushed tag
 * (*shift 4: its id 4 bytes further from addr) or 4 back for a popped one
 * (*shift -4).  Its id, 0: none.
 */
static uint64_t fz_find(struct fuzz *fz, uint64_t addr, int32_t *shift)
{
	static const int32_t shifts[] = { 0, VLAN_HLEN, -VLAN_HLEN };
	uint64_t off = addr & (fz->fs - 1), id, last;

	if (addr >= fz->frames_end)
		return 0;
	last = fz->fr[addr / fz->fs].id;
	for (size_t i = 0; i < sizeof(shifts) / sizeof(shifts[0]); i++) {
		int64_t at = (int64_t)off + FZ_ID_OFF + shifts[i];

		if (at < 0 || at + 8 > fz->fs)
			continue;
		/* a packet with a checksum has its IPv4 header there */
		if (last && (fz->pkts[last - 1].csum & FZ_CSUM_PARTIAL))
			id = last;
		else
			memcpy(&id, fz->ports[0]->umem + addr + FZ_ID_OFF + shifts[i], sizeof(id));
		if (id && id == last &&
		    fz->pkts[id - 1].addr == addr + shifts[i]) {
			*shift = shifts[i];
			return id;
		}
	}
	return 0;
}

/* Descriptor (addr, len) is fragment j >= 1 of packet id as it was
 * delivered: NULL; else what is wrong with it.  bytes: its bytes too. */
static const char *fz_frag_wrong(struct fuzz *fz, uint64_t id, uint32_t j, uint64_t addr,
				 uint32_t len, bool bytes)
{
	const struct fz_frame *r;

	if (addr >= fz->frames_end)
		return "an address past every frame";
	r = &fz->fr[addr / fz->fs];
	if (r->id != id || r->j != j)
		return "a frame that does not hold it";
	if ((addr & (fz->fs - 1)) != r->off || len != r->len)
		return "another offset or length than it was delivered with";
	if (bytes && !fz_frag_bytes(fz->ports[0]->umem + addr, len, id, j, true))
		return "bytes changed";
	return NULL;
}

/* The packet an exact run delivered as these n TX descriptors (a chain,
 * fragment 0 first), sent now: each of its fragments, in order, intact. */
static int fz_check_sent(struct fuzz *fz, uint32_t x, const struct xdp_desc *d, uint32_t n)
{
	uint64_t id, off = d->addr & (fz->fs - 1), bytes = d->len;
	struct fz_pkt *pk;
	int32_t shift = 0;

	/* the id's room is fz_find()'s to check: a popped packet's id lies 4
	 * bytes nearer its start */
	if (d->addr >= fz->frames_end || off + d->len > fz->fs)
		return fz_fail(fz, "worker %u's TX ring holds addr %#llx len %u: not a packet "
			       "the kernel delivered", x, (unsigned long long)d->addr, d->len);
	id = fz_find(fz, d->addr, &shift);
	if (id == 0)
		return fz_fail(fz, "worker %u's TX ring holds addr %#llx: no packet was "
			       "delivered there", x, (unsigned long long)d->addr);
	pk = &fz->pkts[id - 1];
	if (pk->sent)
		return fz_fail(fz, "packet %llu sent twice (again by worker %u, addr %#llx)",
			       (unsigned long long)id, x, (unsigned long long)d->addr);
	if (pk->lie)
		return fz_fail(fz, "packet %llu, a chain that lies (%s), sent by worker %u",
			       (unsigned long long)id, pk->lie == FZ_LIED_RX ? "kernel_bad_chain" :
			       "peer_bad_chain", x);
	if ((uint32_t)(pk->len + shift) != d->len)
		return fz_fail(fz, "packet %llu delivered with %u bytes (%+d for a VLAN tag), sent "
			       "by worker %u with %u", (unsigned long long)id, pk->len, shift, x,
			       d->len);
	if (pk->nfrags != n)
		return fz_fail(fz, "packet %llu delivered as %u descriptors, sent by worker %u "
			       "as %u", (unsigned long long)id, pk->nfrags, x, n);
	for (uint32_t j = 1; j < n; j++) {
		const char *why = fz_frag_wrong(fz, id, j, d[j].addr, d[j].len, true);

		if (why)
			return fz_fail(fz, "packet %llu's fragment %u, sent by worker %u as addr "
				       "%#llx len %u: %s", (unsigned long long)id, j, x,
				       (unsigned long long)d[j].addr, d[j].len, why);
		bytes += d[j].len;
	}
	if ((pk->csum & FZ_CSUM_PARTIAL) &&
	    (fz_l4_sum(fz, d, n) == 0xffff) != !!(pk->csum & FZ_CSUM_VERIFIES))
		return fz_fail(fz, "packet %llu's partial checksum, sent by worker %u: %s",
			       (unsigned long long)id, x, pk->csum & FZ_CSUM_VERIFIES ?
			       "does not verify (not completed over its fragments, or wrong)" :
			       "completed, by a port whose netdev does not ask for it");
	fz->csums += pk->csum & FZ_CSUM_PARTIAL;
	pk->sent = 1;
	fz->sent++;
	fz->bytes_sent += bytes;
	fz->frags_sent += n;
	return 0;
}

/* The packet at TX ring position at (left descriptors published from
 * there) into d: its descriptors, up to the first without XDP_PKT_CONTD.
 * A port sends whole packets only, of at most max_segs descriptors (one
 * without chains), with no option bit but XDP_PKT_CONTD: anything else
 * is its bug (fz_fail(), 0).  Lying, where what is on the ring is the
 * liars' too, the kernel takes one descriptor at a time. */
static uint32_t fz_tx_chain(struct fuzz *fz, uint32_t x, const struct ring *tx, uint32_t at,
			    uint32_t left, struct xdp_desc *d)
{
	const struct xdp_desc *txd = tx->descs;
	uint32_t most = fz->max_segs ? fz->max_segs : 1;

	for (uint32_t i = 0; i < left; i++) {
		d[i] = txd[(at + i) & tx->mask];
		if (!fz->exact)
			return 1;
		if ((d[i].options & ~XDP_PKT_CONTD) || (d[i].options && !fz->max_segs))
			return fz_fail(fz, "worker %u's TX descriptor %u has options %#x", x,
				       at + i, d[i].options), 0;
		if (!(d[i].options & XDP_PKT_CONTD))
			return i + 1;
		if (i + 1 == most)
			return fz_fail(fz, "worker %u sent a chain of more than max_segs (%u) "
				       "descriptors, from TX descriptor %u", x, most, at), 0;
	}
	return fz_fail(fz, "worker %u published half a packet: TX descriptors %u..%u carry "
		       "XDP_PKT_CONTD, the next is not published", x, at, at + left - 1), 0;
}

/* TX descriptors taken from ring tx (x's own, or one of its direct
 * sockets'), whole packets only: they are on the wire, completing on
 * `owner`'s. */
static uint32_t fz_send_ring(struct fuzz *fz, uint32_t x, struct ring *tx, uint32_t owner,
			     uint32_t max)
{
	struct fz_kernel *k = &fz->k[owner];
	uint32_t cons = *tx->consumer, avail = load_acquire(tx->producer) - cons, n = 0;

	if (avail > tx->size) {
		if (fz->exact)
			return fz_fail(fz, "worker %u's TX ring: producer %u is %u past the "
				       "consumer, more than its %u slots", x, cons + avail,
				       avail, tx->size), 0;
		avail = tx->size;
	}
	if (avail > fz->kcap - k->n_tx)
		avail = fz->kcap - k->n_tx;
	while (n < max && n < avail) {
		struct xdp_desc d[FP_MAX_SEGS];
		uint32_t c = fz_tx_chain(fz, x, tx, cons + n, avail - n, d);

		if (!c)
			return 0;
		if (fz->exact && fz_check_sent(fz, x, d, c))
			return 0;
		for (uint32_t i = 0; i < c; i++)
			k->tx[k->n_tx++] = d[i].addr;
		n += c;
	}
	store_release(tx->consumer, cons + n);
	return n;
}

static uint32_t fz_send(struct fuzz *fz, uint32_t x, uint32_t max)
{
	PortObject *p = fz->ports[x];
	uint32_t n = fz_send_ring(fz, x, &p->tx, fz_owner(fz, x), max);

	for (uint32_t j = 0; j < p->n_direct && !PyErr_Occurred(); j++) {
		if (p->direct[j].open)
			n += fz_send_ring(fz, x, &p->direct[j].tx, p->direct[j].owner, max);
	}
	return n;
}

/* Sent frames back on the COMPLETION ring, in any order. */
static uint32_t fz_complete(struct fuzz *fz, uint32_t x, uint32_t max)
{
	struct ring *cq = &fz->ports[fz_owner(fz, x)]->comp;
	struct fz_kernel *k = &fz->k[fz_owner(fz, x)];
	uint64_t *a = cq->descs;
	uint32_t prod = *cq->producer, used = prod - load_acquire(cq->consumer), n;

	if (used > cq->size) {
		if (fz->exact)
			return fz_fail(fz, "worker %u's COMPLETION consumer is past its "
				       "producer %u", x, prod), 0;
		return 0;
	}
	n = cq->size - used;
	if (n > k->n_tx)
		n = k->n_tx;
	if (n > max)
		n = max;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t j = fz_below(fz, k->n_tx);

		a[(prod + i) & cq->mask] = k->tx[j];
		k->tx[j] = k->tx[--k->n_tx];
	}
	store_release(cq->producer, prod + n);
	return n;
}

/* A random rule: no rule (action NONE), drop or forward; with `match`,
 * a match on a few bits of the frame (a frame's bytes are random). */
static void fz_rule(struct fuzz *fz, struct fp_rule *r, bool match)
{
	uint32_t what = fz_below(fz, 16);

	r->id = fz_below(fz, 64);
	if (match && fz_below(fz, 4)) {
		r->match.fields = 1U << fz_below(fz, 8);
		r->match.ethertype = fz_below(fz, 2) ? htons(0x0800) : (uint16_t)fz_rand(fz);
		r->match.vlan = (uint16_t)fz_below(fz, 4);
		r->match.ip_proto = fz_below(fz, 2) ? 17 : (uint8_t)fz_rand(fz);
		r->match.src_port = (uint16_t)fz_below(fz, 4);
		r->match.dst_port = (uint16_t)fz_below(fz, 4);
		r->match.src_mask[0] = r->match.dst_mask[0] = htonl(0xff000000);
		r->match.src[0] = r->match.dst[0] = htonl(fz_below(fz, 4) << 24);
	}
	if (what == 0)
		return;					/* no rule */
	if (what == 1) {
		r->action = FP_ACT_DROP;
		return;
	}
	r->action = FP_ACT_FORWARD;
	r->n_egress = 1 + fz_below(fz, fz->n < 4 ? fz->n : 4);
	for (uint32_t e = 0; e < r->n_egress; e++)
		r->egress[e] = (uint16_t)fz_below(fz, fz->n);
	r->mac_flags = fz_below(fz, 8);
	for (int i = 0; i < ETH_ALEN; i++) {
		r->dst_mac[i] = (uint8_t)fz_rand(fz);
		r->src_mac[i] = (uint8_t)fz_rand(fz);
	}
	if (!fz_below(fz, 8))
		r->max_len = ETH_HLEN + fz_below(fz, fz->fs);
	r->vlan_op = fz_below(fz, 4) % 3;		/* none half the time, push, pop */
	r->vlan_tpid = htons(fz_below(fz, 2) ? 0x8100 : 0x88a8);
	r->vlan_tci = (uint16_t)fz_rand(fz);
}

/* A forwarding table as the supervisor writes one (Control.write_table). */
static void fz_table(struct fuzz *fz)
{
	struct fp_tables_area *h = fz->v->tab;
	uint32_t next = (h->active_table & 1) ^ 1;
	struct fp_table *t = ctl_table(fz->v, next);

	memset(t->by_netdev, 0, fz->ndevs * sizeof(t->by_netdev[0]));
	for (uint32_t nd = 0; nd < fz->ndevs; nd++) {
		/* mostly one rule without a match (port_receive); sometimes a
		 * list with matches on the frame's random bytes (port_receive_rules) */
		uint32_t nr = fz_below(fz, 4) ? 1 : 1 + fz_below(fz, FP_MAX_RULES);

		t->by_netdev[nd].n_rules = nr;
		/* odd netdevs complete partial checksums: the frames' bytes are
		 * whatever the UMEM held, so the parse meets every lie (no draw
		 * from the generator: a seed replays as it did before) */
		t->by_netdev[nd].flags = nd & 1 ? FP_NETDEV_CSUM_COMPLETE : 0;
		for (uint32_t k = 0; k < nr; k++)
			fz_rule(fz, &t->by_netdev[nd].rules[k], nr > 1);
	}
	t->n_netdevs = fz->ndevs;
	/* direct sockets allowed, but now and then one is not: its packets
	 * take the fwd ring meanwhile (a draw only where there are sockets,
	 * so that runs without them replay as before) */
	for (uint32_t w = 0; w < fz->n; w++) {
		uint8_t bits = 0xff;

		if (fz->ports[w]->n_direct && !fz_below(fz, 8))
			bits = (uint8_t)fz_rand(fz);
		t->direct_ok[w] = bits;
	}
	t->generation = h->generation + 1;
	__atomic_store_n(&h->generation, t->generation, __ATOMIC_RELEASE);
	__atomic_store_n(&h->active_table, next, __ATOMIC_RELEASE);
}

/* ---- the kernel and the peers, lying ---- */

/* An address a liar might hand worker x. */
static uint64_t fz_bad_addr(struct fuzz *fz, uint32_t x)
{
	struct fz_kernel *k = &fz->k[x];

	switch (fz_below(fz, 10)) {
	case 0:		/* one of x's frames, at any offset */
		return x * fz->span + fz_below(fz, fz->span);
	case 9:		/* the last bytes of x's last frame (of the UMEM's, for the last x) */
		return (x + 1) * fz->span - 1 - fz_below(fz, 16);
	case 1:		/* anyone's frame, any offset */
		return fz_rand(fz) % fz->frames_end;
	case 2:		/* another worker's frame, as received */
		return fz_below(fz, fz->n) * fz->span + fz_below(fz, fz->fpw) * (uint64_t)fz->fs +
		       EMU_HEADROOM;
	case 3:		/* past the last frame, past the UMEM */
		return fz->frames_end + fz_rand(fz) % (fz->umem_size - fz->frames_end + 4 * fz->fs);
	case 4:		/* around the UMEM's end */
		return fz->umem_size - 2 + fz_below(fz, 4);
	case 5:
		return fz_rand(fz);
	case 6:		/* wraps around when an offset is added */
		return UINT64_MAX - fz_below(fz, 4096);
	case 7:		/* given twice: a frame on x's free list */
		return ctl_freelist(fz->v, x)[fz_below(fz, fz->fpw)] + EMU_HEADROOM;
	default:	/* given twice: one the kernel holds already */
		if (k->n_fill)
			return k->fill[fz_below(fz, k->n_fill)] + EMU_HEADROOM;
		if (k->n_tx)
			return k->tx[fz_below(fz, k->n_tx)];
		return x * fz->span + EMU_HEADROOM;
	}
}

static uint32_t fz_bad_len(struct fuzz *fz, uint64_t addr)
{
	switch (fz_below(fz, 7)) {
	case 0:
		return 0;
	case 1:
		return 1 + fz_below(fz, ETH_HLEN - 1);
	case 2:		/* just past the frame's end */
		return fz->fs - (addr & (fz->fs - 1)) + 1 + fz_below(fz, 64);
	case 3:
		return UINT32_MAX - fz_below(fz, 2);
	case 4:
		return (uint32_t)fz_rand(fz);
	case 5:		/* the most a ring entry's 16 bits hold */
		return 0xffff;
	default:
		return EMU_MIN_LEN + fz_below(fz, fz->fs);
	}
}

/* An index jump: a little, past the ring, anywhere, backwards. */
static uint32_t fz_jump(struct fuzz *fz, uint32_t size)
{
	switch (fz_below(fz, 4)) {
	case 0:
		return 1 + fz_below(fz, size);
	case 1:
		return size + 1 + fz_below(fz, 4 * size);
	case 2:
		return (uint32_t)fz_rand(fz);
	default:
		return -(1 + fz_below(fz, size));
	}
}

static void fz_lie_rx(struct fuzz *fz, uint32_t x)
{
	struct ring *rx = &fz->ports[x]->rx;
	struct xdp_desc *rxd = rx->descs;
	uint32_t prod = *rx->producer, n = 1 + fz_below(fz, 4);

	for (uint32_t i = 0; i < n; i++) {
		struct xdp_desc *d = &rxd[(prod + i) & rx->mask];

		d->addr = fz_bad_addr(fz, x);
		d->len = fz_bad_len(fz, d->addr);
		d->options = (uint32_t)fz_rand(fz);
	}
	store_release(rx->producer, prod + n);
}

static void fz_lie_comp(struct fuzz *fz, uint32_t x)
{
	struct ring *cq = &fz->ports[fz_owner(fz, x)]->comp;
	uint64_t *a = cq->descs;
	uint32_t prod = *cq->producer, n = 1 + fz_below(fz, 4);

	for (uint32_t i = 0; i < n; i++)
		a[(prod + i) & cq->mask] = fz_bad_addr(fz, x);
	store_release(cq->producer, prod + n);
}

/* An index that a lie left out of its ring's range put back in it, so
 * that a port is not lost to one lie for the rest of the run. */
static void fz_resync(struct ring *r, bool kernel_produces)
{
	uint32_t prod = *r->producer, cons = *r->consumer;

	if (prod - cons <= r->size)
		return;
	if (kernel_produces)
		store_release(r->producer, cons);
	else
		store_release(r->consumer, prod);
}

static void fz_lie_index(struct fuzz *fz, uint32_t x)
{
	PortObject *p = fz->ports[x], *o = fz->ports[fz_owner(fz, x)];
	struct ring *r;

	switch (fz_below(fz, 8)) {
	case 0:
		r = &p->rx;
		store_release(r->producer, *r->producer + fz_jump(fz, r->size));
		break;
	case 1:
		r = &o->comp;
		store_release(r->producer, *r->producer + fz_jump(fz, r->size));
		break;
	case 2:
		r = &o->fill;
		store_release(r->consumer, *r->consumer + fz_jump(fz, r->size));
		break;
	case 3:
		r = &p->tx;
		store_release(r->consumer, *r->consumer + fz_jump(fz, r->size));
		break;
	case 4:		/* need_wakeup: the port makes a syscall on fd -1 */
		r = fz_below(fz, 2) ? &o->fill : &p->tx;
		*r->flags ^= XDP_RING_NEED_WAKEUP;
		break;
	default:	/* back in step */
		fz_resync(&p->rx, true);
		fz_resync(&o->comp, true);
		fz_resync(&o->fill, false);
		fz_resync(&p->tx, false);
	}
}

/* A peer other than x (x itself when it has none: its own rings are never read). */
static uint32_t fz_peer(struct fuzz *fz, uint32_t x)
{
	return fz->n > 1 ? (x + 1 + fz_below(fz, fz->n - 1)) % fz->n : x;
}

static void fz_lie_fwd(struct fuzz *fz, uint32_t x)
{
	uint32_t y = fz_peer(fz, x), n = 1 + fz_below(fz, 4);
	struct fp_ring *r = ctl_ring(fz->v, 0, y, x);
	uint32_t prod = r->prod;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t addr = fz_bad_addr(fz, y), e;

		e = fz_below(fz, 4) ? (addr & RING_ADDR_MASK) |
				      (uint64_t)(fz_bad_len(fz, addr) & 0xffff) << RING_LEN_SHIFT
				    : fz_rand(fz);
		r->slots[(prod + i) & (fz->entries - 1)] = e;
	}
	store_release(&r->prod, prod + n);
}

static void fz_lie_ret(struct fuzz *fz, uint32_t x)
{
	uint32_t y = fz_peer(fz, x), n = 1 + fz_below(fz, 4);
	struct fp_ring *r = ctl_ring(fz->v, 1, y, x);
	uint32_t prod = r->prod;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t addr;

		if (fz_below(fz, 2))	/* returned twice: one x has at home */
			addr = ctl_freelist(fz->v, x)[fz_below(fz, fz->fpw)];
		else
			addr = fz_bad_addr(fz, x);
		r->slots[(prod + i) & (fz->entries - 1)] = addr;
	}
	store_release(&r->prod, prod + n);
}

static void fz_lie_peer_index(struct fuzz *fz, uint32_t x)
{
	struct fp_ring *r = ctl_ring(fz->v, fz_below(fz, 2), fz_peer(fz, x), x);

	if (fz_below(fz, 2))
		store_release(&r->prod, r->prod + fz_jump(fz, fz->entries));
	else if (r->prod - r->cons > fz->entries)
		store_release(&r->prod, r->cons);	/* back in step */
}

/*
 * A chain the port must refuse, made of FILL buffers the kernel holds, so
 * that an exact run can follow it: its frames go home, it is counted once
 * in chain_invalid, its bad fragments in bad_descs, and it is never sent.
 * How it lies: XDP_PKT_CONTD on max_segs descriptors (no end), a
 * zero-length fragment, fragment 0 shorter than FRAG0_MIN, a fragment
 * past its frame's end.  Published whole, as the kernel publishes.
 */
static void fz_bad_chain(struct fuzz *fz, uint32_t x)
{
	struct ring *rx = &fz->ports[x]->rx;
	struct fz_kernel *k = &fz->k[fz_owner(fz, x)];
	struct xdp_desc *rxd = rx->descs;
	uint32_t prod = *rx->producer, used = prod - load_acquire(rx->consumer);
	uint32_t how = fz_below(fz, 4), bad = 0, nf, at;
	uint64_t id = 0;

	nf = how == 0 ? fz->max_segs : 2 + fz_below(fz, fz_most_frags(fz) - 1);
	at = fz_below(fz, nf);			/* the fragment that lies */
	if (used > rx->size || nf > rx->size - used || nf > k->n_fill)
		return;
	if (fz->exact && !(id = fz_new_pkt(fz)))
		return;
	for (uint32_t j = 0; j < nf; j++) {
		uint32_t b = fz_below(fz, k->n_fill), off, len;
		uint64_t base = k->fill[b] & ~((uint64_t)fz->fs - 1);
		struct xdp_desc *d = &rxd[(prod + j) & rx->mask];

		k->fill[b] = k->fill[--k->n_fill];
		fz_frag_draw(fz, j, nf, &off, &len);
		if (how == 1 && j == at)
			len = 0;
		else if (how == 2 && j == 0)
			len = fz_below(fz, FRAG0_MIN);
		else if (how == 3 && j == at)
			len = fz->fs - off + 1 + fz_below(fz, 64);
		bad += !len || off + len > fz->fs;
		fz_frag_mark(fz, base, off, len, id, j);
		d->addr = base + off;
		d->len = len;
		d->options = how == 0 || j + 1 < nf ? XDP_PKT_CONTD : 0;
	}
	if (id) {
		struct fz_pkt *pk = &fz->pkts[id - 1];

		pk->nfrags = (uint8_t)nf;
		pk->lie = FZ_LIED_RX;
		pk->bad = (uint8_t)bad;
		fz->frags_delivered += nf;
		fz->n_lies++;
		fz->bad_delivered += bad;
	}
	store_release(rx->producer, prod + nf);
}

/* A descriptor chain's XDP_PKT_CONTD (RING_CONTD) on entry i of n, as a
 * liar sets them: on all (no end), all but the last, at random. */
static inline bool fz_lie_contd(struct fuzz *fz, uint32_t how, uint32_t i, uint32_t n)
{
	return how == 0 || (how == 1 && i + 1 < n) || (how == 2 && fz_below(fz, 2));
}

/* The kernel lying with chains: up to max_segs + 3 descriptors, each a
 * frame of the RX home's at the headroom (held by anyone) or any address
 * fz_bad_addr() makes up, a length fit for fragment 0 or any. */
static void fz_lie_chain(struct fuzz *fz, uint32_t x)
{
	struct ring *rx = &fz->ports[x]->rx;
	struct xdp_desc *rxd = rx->descs;
	uint32_t prod = *rx->producer, n = 1 + fz_below(fz, fz->max_segs + 3);
	uint32_t how = fz_below(fz, 3), home = fz_owner(fz, x);

	for (uint32_t i = 0; i < n; i++) {
		struct xdp_desc *d = &rxd[(prod + i) & rx->mask];

		d->addr = fz_below(fz, 2) ? home * fz->span +
				(uint64_t)fz_below(fz, fz->fpw) * fz->fs + EMU_HEADROOM :
				fz_bad_addr(fz, x);
		d->len = fz_below(fz, 2) ? FRAG0_MIN + fz_below(fz, fz->fs - EMU_HEADROOM - FRAG0_MIN)
					 : fz_bad_len(fz, d->addr);
		d->options = fz_lie_contd(fz, how, i, n) ? XDP_PKT_CONTD : 0;
	}
	store_release(rx->producer, prod + n);
}

/* A peer lying with chains on its fwd ring to x: entries of frames it
 * may lend (its home's) or not, of lengths fit or not, RING_CONTD set as
 * fz_lie_contd() says; sometimes only the first of them published. */
static void fz_lie_fwd_chain(struct fuzz *fz, uint32_t x)
{
	uint32_t y = fz_peer(fz, x), n = 1 + fz_below(fz, fz->max_segs + 3);
	uint32_t how = fz_below(fz, 3), home = fz_owner(fz, y);
	struct fp_ring *r = ctl_ring(fz->v, 0, y, x);
	uint32_t prod = r->prod;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t addr = fz_below(fz, 4) ? home * fz->span +
				(uint64_t)fz_below(fz, fz->fpw) * fz->fs + EMU_HEADROOM :
				fz_bad_addr(fz, y);
		uint64_t len = fz_below(fz, 4) ? ETH_HLEN + fz_below(fz, fz->fs - EMU_HEADROOM - ETH_HLEN)
					       : fz_bad_len(fz, addr) & 0xffff;

		r->slots[(prod + i) & (fz->entries - 1)] =
			(addr & RING_ADDR_MASK & ~RING_CONTD) | len << RING_LEN_SHIFT |
			(fz_lie_contd(fz, how, i, n) ? RING_CONTD : 0);
	}
	/* now and then a chain's head published, its tail not (yet) */
	store_release(&r->prod, prod + (fz_below(fz, 4) ? n : 1 + fz_below(fz, n)));
}

/*
 * A peer lying with a chain it did lend, so that an exact run can follow
 * it: one of the packets of two or more entries on a fwd ring into x, at
 * random, made one x must refuse: RING_CONTD on the last entry of one of
 * max_segs (no end), a fragment of length 0 or past its frame's end,
 * fragment 0 shorter than ETH_HLEN.  Its frames must go home on the ret
 * ring; it is counted once in chain_invalid (a bad entry in bad_descs)
 * and never sent.
 */
static void fz_bad_fwd_chain(struct fuzz *fz, uint32_t x)
{
	uint32_t y = fz_peer(fz, x), mask = fz->entries - 1, how = fz_below(fz, 4);
	struct fp_ring *r = ctl_ring(fz->v, 0, y, x);
	uint32_t cons = r->cons, used = r->prod - cons, at = 0, n = 0, seen = 0;
	struct fz_pkt *pk = NULL;
	uint64_t *e, off, len;
	int32_t shift;

	/* a dead x may have taken entries its commit has not published yet */
	if (y == x || used > fz->entries || fz->dead[x])
		return;
	for (uint32_t i = 0, k; i < used; i += k) {
		for (k = 1; k < fz->max_segs && i + k < used &&
			    (r->slots[(cons + i + k - 1) & mask] & RING_CONTD); k++)
			;
		if (k > 1 && !fz_below(fz, ++seen))
			at = i, n = k;
	}
	if (!n)
		return;
	if (fz->exact) {	/* whole, and not a lie already (else the scan tells) */
		uint64_t id = fz_find(fz, r->slots[(cons + at) & mask] & RING_ADDR_MASK &
				      ~RING_CONTD, &shift);

		pk = id ? &fz->pkts[id - 1] : NULL;
		if (!pk || pk->lie || pk->nfrags != n)
			return;
	}
	if (how == 0 && n < fz->max_segs)
		how = 1;
	e = &r->slots[(cons + at + (how == 0 ? n - 1 : how == 3 ? 0 : fz_below(fz, n))) & mask];
	off = *e & (fz->fs - 1);
	len = how == 1 ? 0 : how == 2 ? fz->fs - off + 1 + fz_below(fz, 64) :
	      1 + fz_below(fz, ETH_HLEN - 1);
	if (how == 0)
		*e |= RING_CONTD;
	else
		*e = (*e & (RING_ADDR_MASK | RING_CONTD)) | len << RING_LEN_SHIFT;
	if (pk) {
		pk->lie = FZ_LIED_FWD;
		pk->bad = how != 0;
		fz->fwd_lies++;
		fz->fwd_bad += how != 0;
	}
}

/* A table of garbage: any counts, actions, egress ids; the active index too. */
static void fz_lie_table(struct fuzz *fz)
{
	struct fp_tables_area *h = fz->v->tab;
	uint32_t next = (h->active_table & 1) ^ 1;
	struct fp_table *t = ctl_table(fz->v, next);

	t->n_netdevs = fz_below(fz, 2) ? fz->ndevs : (uint32_t)fz_rand(fz);
	for (uint32_t nd = 0; nd < fz->ndevs; nd++) {
		struct fp_netdev *ndv = &t->by_netdev[nd];
		struct fp_rule *r = &ndv->rules[fz_below(fz, FP_MAX_RULES)];

		ndv->n_rules = fz_below(fz, 2) ? 1 + fz_below(fz, FP_MAX_RULES)
					       : (uint32_t)fz_rand(fz);
		ndv->flags = ndv->n_rules;	/* any bits, no draw */
		if (fz_below(fz, 2))
			r->match.fields = (uint32_t)fz_rand(fz);
		r->action = fz_below(fz, 2) ? FP_ACT_FORWARD : (uint32_t)fz_rand(fz);
		r->mac_flags = (uint32_t)fz_rand(fz);
		r->vlan_op = fz_below(fz, 2) ? fz_below(fz, 3) : (uint32_t)fz_rand(fz);
		r->vlan_tpid = (uint16_t)fz_rand(fz);
		r->vlan_tci = (uint16_t)fz_rand(fz);
		r->max_len = fz_below(fz, 2) ? 0 : (uint32_t)fz_rand(fz);
		r->n_egress = fz_below(fz, 2) ? 1 + fz_below(fz, FP_MAX_EGRESS)
					      : (uint32_t)fz_rand(fz);
		for (uint32_t e = 0; e < FP_MAX_EGRESS; e++)
			r->egress[e] = (uint16_t)(fz_below(fz, 2) ? fz_below(fz, fz->n)
								  : fz_rand(fz));
	}
	t->generation = h->generation + 1;
	__atomic_store_n(&h->generation, t->generation, __ATOMIC_RELEASE);
	__atomic_store_n(&h->active_table,
			 fz_below(fz, 2) ? next : ((uint32_t)fz_rand(fz) & ~1U) | next,
			 __ATOMIC_RELEASE);
}

/* A worker slot's state, queue or netdev index of garbage (the rule is
 * looked up again at the next table). */
static void fz_lie_state(struct fuzz *fz)
{
	uint32_t w = fz_below(fz, fz->n);
	struct fp_worker *wk = ctl_worker(fz->v, w);
	struct fp_assign *a = ctl_assign(fz->v, w);
	uint32_t v = (uint32_t)fz_rand(fz);

	switch (fz_below(fz, 3)) {
	case 0:
		__atomic_store_n(&wk->state, fz_below(fz, 2) ? v % (FP_STATE_DRAINING + 2) : v,
				 __ATOMIC_RELEASE);
		break;
	case 1:
		a->queue = fz_below(fz, 2) ? v % (2 * FP_MAX_EGRESS) : v;
		break;
	default:
		a->netdev = fz_below(fz, 2) ? v % (FP_MAX_NETDEVS + 2) : v;
	}
}

/* ---- crashes ---- */

/*
 * Worker x dies somewhere in an iteration: all of it done (the most it
 * can have written past the published indices), then stopped before the
 * commit, one store short of the commit point (everything port_commit
 * writes before it, so that nothing it writes there may be visible), right
 * after the commit point, with part of the redo log applied, or after the
 * commit.  Its local state is lost with the port object; the kernel and
 * the peers go on meanwhile, and fz_revive() starts the replacement.
 */
static void fz_kill(struct fuzz *fz, uint32_t x)
{
	PortObject *p = fz->ports[x];
	uint64_t *word = &p->me->commit.word, before = *word;
	uint32_t filled, how = fz_below(fz, FZ_KILL__MAX);

	port_iterate(p, &filled);
	switch (how) {
	case FZ_KILL_BEFORE_COMMIT:
		break;
	case FZ_KILL_AT_COMMIT:
		port_commit_begin(p);
		*word = before;		/* its last store, the commit point, undone */
		break;
	case FZ_KILL_PENDING:
		port_commit_begin(p);
		break;
	case FZ_KILL_MID_REDO:
		port_commit_begin(p);
		redo_apply(p, fz_below(fz, p->redo_len + 1));
		break;
	default:
		port_commit(p);
	}
	fz->kills[how]++;
	fz->dead[x] = 1 + fz_below(fz, 32);
	fz->n_dead++;
}

/* A fresh port over the dead one's rings and slot, as a replacement worker. */
static int fz_revive(struct fuzz *fz, uint32_t x)
{
	PortObject *old = fz->ports[x], *p;
	struct port_cfg cfg = fz->s.cfg;

	p = (PortObject *)PortType.tp_alloc(&PortType, 0);
	if (!p)
		return -1;
	cfg.id = x;
	cfg.adopt = old;
	fz_poison_port(fz, old, false);
	if (port_open(p, fz->s.c, &cfg, NULL)) {
		Py_DECREF(p);
		return -1;
	}
	Py_DECREF(old);
	fz->ports[x] = p;
	fz_poison_port(fz, p, true);
	__atomic_store_n(&p->me->state, FP_STATE_RUNNING, __ATOMIC_RELEASE);
	fz->dead[x] = 0;
	fz->n_dead--;
	return 0;
}

/* ---- the exact check ---- */

/* The frame at addr is at loc: once, and a frame of whom loc allows. */
static int fz_place(struct fuzz *fz, uint64_t addr, uint32_t loc)
{
	uint32_t kind = loc >> 16, a = (loc >> 8) & 0xff, b = loc & 0xff, home, want, cat;
	char l1[80], l2[80];
	uint64_t f;

	if (addr >= fz->frames_end)
		return fz_fail(fz, "%s holds address %#llx, past every worker's frames (%#llx)",
			       fz_loc_name(loc, l1, sizeof(l1)), (unsigned long long)addr,
			       (unsigned long long)fz->frames_end);
	f = addr / fz->fs;
	home = (uint32_t)(f / fz->fpw);
	switch (kind) {
	case FZ_LOC_FREE:
		cat = FZ_FREE, want = a;
		break;
	case FZ_LOC_FILL:
	case FZ_LOC_KFILL:
	case FZ_LOC_RX:			/* a fanout member's: its owner's frames */
		cat = FZ_RX, want = fz_owner(fz, a);
		break;
	case FZ_LOC_FWD:		/* lent by a (a member lends its owner's) */
		cat = FZ_HANDOFF, want = fz_owner(fz, a);
		break;
	case FZ_LOC_RET:		/* on its way home to b */
		cat = FZ_HANDOFF, want = b;
		break;
	case FZ_LOC_DTX:		/* lent by a, on its own direct socket */
		cat = FZ_HANDOFF, want = a;
		break;
	default:			/* a's TX path: its group's own, or borrowed */
		cat = home == fz_owner(fz, a) ? FZ_TX : FZ_HANDOFF, want = home;
	}
	if (home != want)
		return fz_fail(fz, "%s holds frame %llu, which is worker %u's",
			       fz_loc_name(loc, l1, sizeof(l1)), (unsigned long long)f, home);
	if (kind <= FZ_LOC_KFILL && (addr & (fz->fs - 1)))
		return fz_fail(fz, "%s holds %#llx: not a frame's start",
			       fz_loc_name(loc, l1, sizeof(l1)), (unsigned long long)addr);
	if (fz->where[f] != FZ_NOWHERE)
		return fz_fail(fz, "frame %llu (worker %u's) is in %s and in %s",
			       (unsigned long long)f, home,
			       fz_loc_name(fz->where[f], l1, sizeof(l1)),
			       fz_loc_name(loc, l2, sizeof(l2)));
	fz->where[f] = loc;
	fz->cnt[home][cat]++;
	return 0;
}

/* The packet in addr[] and len[] (n descriptors, fragment 0 first) is on
 * its way, counted in *way: delivered, not sent yet, as long as it was
 * delivered, its fragments where they were delivered, and nowhere else.
 * A chain that lies (fz_bad_chain()) waits on its RX ring, nowhere else. */
static int fz_in_flight(struct fuzz *fz, const uint64_t *addr, const uint32_t *len, uint32_t n,
			uint32_t loc, struct fz_way *way)
{
	uint64_t id, bytes = len[0];
	struct fz_pkt *pk;
	int32_t shift = 0;
	char l1[80];

	id = fz_find(fz, addr[0], &shift);
	if (id == 0)
		return fz_fail(fz, "%s holds addr %#llx: no packet was delivered there",
			       fz_loc_name(loc, l1, sizeof(l1)), (unsigned long long)addr[0]);
	pk = &fz->pkts[id - 1];
	/* a peer's lie changed its lengths: it stays where it was told */
	if (pk->sent || pk->seen == fz->pass || pk->nfrags != n ||
	    (pk->lie && loc >> 16 != (pk->lie == FZ_LIED_RX ? FZ_LOC_RX : FZ_LOC_FWD)) ||
	    (pk->lie != FZ_LIED_FWD && (uint32_t)(pk->len + shift) != len[0]))
		return fz_fail(fz, "%s holds packet %llu (%u bytes, %u descriptors), which is %s",
			       fz_loc_name(loc, l1, sizeof(l1)), (unsigned long long)id, len[0], n,
			       pk->sent ? "sent already" : pk->seen == fz->pass ?
			       "on its way twice" : pk->nfrags != n ? "of another number of them" :
			       pk->lie ? "a chain that lies, taken on from where it lied" :
			       "of another length");
	for (uint32_t j = 1; j < n && pk->lie != FZ_LIED_FWD; j++) {
		const char *why = fz_frag_wrong(fz, id, j, addr[j], len[j], false);

		if (why)
			return fz_fail(fz, "%s holds packet %llu's fragment %u as addr %#llx len %u: "
				       "%s", fz_loc_name(loc, l1, sizeof(l1)), (unsigned long long)id,
				       j, (unsigned long long)addr[j], len[j], why);
		bytes += len[j];
	}
	pk->seen = fz->pass;
	way->packets++;
	way->frags += n;
	if (pk->lie == FZ_LIED_RX) {
		fz->lies_on_rx++;
		fz->bad_on_rx += pk->bad;
	} else if (pk->lie == FZ_LIED_FWD) {
		fz->lies_on_fwd++;
		fz->bad_on_fwd += pk->bad;
	} else {
		way->bytes += bytes;
	}
	return 0;
}

/* Every entry between a kernel ring's consumer and producer; for RX and
 * TX (way not NULL) the packets, whole (up to the first descriptor
 * without XDP_PKT_CONTD, or max_segs of them, as the port reads them),
 * counted in *way. */
static int fz_scan_ring(struct fuzz *fz, struct ring *r, bool descs, uint32_t loc,
			struct fz_way *way)
{
	uint32_t cons = load_acquire(r->consumer), used = load_acquire(r->producer) - cons;
	uint32_t most = fz->max_segs ? fz->max_segs : 1, n = 0;
	uint64_t addr[FP_MAX_SEGS];
	uint32_t len[FP_MAX_SEGS];
	char l1[80];

	if (used > r->size)
		return fz_fail(fz, "%s: %u entries between consumer and producer, more than "
			       "its %u slots", fz_loc_name(loc, l1, sizeof(l1)), used, r->size);
	for (uint32_t i = 0; i < used; i++) {
		uint32_t at = (cons + i) & r->mask;
		const struct xdp_desc *d = descs ? &((struct xdp_desc *)r->descs)[at] : NULL;

		addr[n] = d ? d->addr : ((uint64_t *)r->descs)[at];
		if (fz_place(fz, addr[n], loc))
			return -1;
		if (!way)
			continue;
		len[n++] = d->len;
		if ((d->options & XDP_PKT_CONTD) && n < most)
			continue;
		if (fz_in_flight(fz, addr, len, n, loc, way))
			return -1;
		n = 0;
	}
	if (n)
		return fz_fail(fz, "%s ends with half a packet: %u descriptors with "
			       "XDP_PKT_CONTD", fz_loc_name(loc, l1, sizeof(l1)), n);
	return 0;
}

/* The same for a handoff ring: a fwd ring's packets, whole (RING_CONTD on
 * all entries but a chain's last), counted in *way. */
static int fz_scan_hring(struct fuzz *fz, struct fp_ring *r, uint32_t loc, struct fz_way *way)
{
	uint32_t cons = load_acquire(&r->cons), used = load_acquire(&r->prod) - cons;
	uint64_t contd = fz->max_segs ? RING_CONTD : 0, addr[FP_MAX_SEGS];
	uint32_t most = fz->max_segs ? fz->max_segs : 1, n = 0, len[FP_MAX_SEGS];
	char l1[80];

	if (used > fz->entries)
		return fz_fail(fz, "%s: %u entries between consumer and producer, more than "
			       "its %u slots", fz_loc_name(loc, l1, sizeof(l1)), used, fz->entries);
	for (uint32_t i = 0; i < used; i++) {
		uint64_t e = r->slots[(cons + i) & (fz->entries - 1)];

		/* without chains, a RING_CONTD is an address past every frame */
		addr[n] = e & RING_ADDR_MASK & ~contd;
		if (fz_place(fz, addr[n], loc))
			return -1;
		if (!way)
			continue;
		len[n++] = (uint32_t)(e >> RING_LEN_SHIFT);
		if ((e & contd) && n < most)
			continue;
		if (fz_in_flight(fz, addr, len, n, loc, way))
			return -1;
		n = 0;
	}
	if (n)
		return fz_fail(fz, "%s ends with half a packet: %u entries with RING_CONTD",
			       fz_loc_name(loc, l1, sizeof(l1)), n);
	return 0;
}

static void fz_stats_sum(struct fuzz *fz, struct fp_stats *sum, struct fp_frames *frames)
{
	memset(sum, 0, sizeof(*sum));
	for (uint32_t w = 0; w < fz->n; w++) {
		struct fp_counts k;
		uint64_t *from = (uint64_t *)&k.stats, *to = (uint64_t *)sum;

		ctl_counts(fz->v, w, &k);
		for (size_t i = 0; i < sizeof(*sum) / 8; i++)
			to[i] += from[i];
		if (frames)
			frames[w] = k.frames;
	}
	/* what went out on direct sockets is transmitted, as by the egress
	 * (a descriptor a packet: no chain goes there) */
	for (int j = 0; j < FP_MAX_DIRECT; j++) {
		sum->tx_packets += sum->direct_packets[j];
		sum->tx_descs += sum->direct_packets[j];
		sum->tx_bytes += sum->direct_bytes[j];
	}
}

static uint64_t fz_drops(const struct fp_stats *st)
{
	uint64_t sum = 0;

	for (int r = 0; r < FP_DROP__MAX; r++)
		sum += st->drops[r];
	return sum;
}

/* The committed counters (their sums, st) against what fz_scan() found
 * on its way and what was delivered and sent: packets, bytes, descriptors;
 * the refusals fz_bad_chain() asked for and nothing else. */
static int fz_counters(struct fuzz *fz, const struct fp_stats *st)
{
	const struct fp_stats *s0 = &fz->st0;
	uint64_t rx = st->rx_packets - s0->rx_packets, tx = st->tx_packets - s0->tx_packets;
	uint64_t out = st->handoff_out - s0->handoff_out, in = st->handoff_in - s0->handoff_in;
	uint64_t drops = fz_drops(st) - fz_drops(s0), on = fz->on_rx.packets +
			 fz->on_fwd.packets + fz->on_tx.packets;
	uint64_t bad = st->bad_descs - s0->bad_descs, frags = st->rx_frags - s0->rx_frags;
	uint64_t descs = st->tx_descs - s0->tx_descs;
	uint64_t refused = st->drops[FP_DROP_CHAIN_INVALID] - s0->drops[FP_DROP_CHAIN_INVALID];
	/* a peer's lie refused: handed out, never in */
	uint64_t lies = fz->n_lies - fz->lies_on_rx, peer = fz->fwd_lies - fz->lies_on_fwd;
	uint64_t bads = fz->bad_delivered - fz->bad_on_rx + fz->fwd_bad - fz->bad_on_fwd;

	if (fz->n_pkts != fz->sent + drops + on)
		return fz_fail(fz, "%llu packets delivered; %llu sent, %llu dropped, %llu on RX, "
			       "%llu on fwd and %llu on TX rings: %lld unaccounted for",
			       (unsigned long long)fz->n_pkts, (unsigned long long)fz->sent,
			       (unsigned long long)drops, (unsigned long long)fz->on_rx.packets,
			       (unsigned long long)fz->on_fwd.packets,
			       (unsigned long long)fz->on_tx.packets,
			       (long long)(fz->n_pkts - fz->sent - drops - on));
	if (rx != fz->n_pkts - fz->on_rx.packets || tx != fz->sent + fz->on_tx.packets ||
	    out != in + fz->on_fwd.packets + peer ||
	    st->rx_bytes - s0->rx_bytes != fz->bytes_delivered - fz->on_rx.bytes ||
	    st->tx_bytes - s0->tx_bytes != fz->bytes_sent + fz->on_tx.bytes)
		return fz_fail(fz, "committed counters rx_packets %llu rx_bytes %llu tx_packets "
			       "%llu tx_bytes %llu handoff_out %llu handoff_in %llu; the kernel "
			       "and the rings say %llu, %llu, %llu, %llu, %llu - %llu on fwd rings "
			       "(+ peer_bad_chain's refused)",
			       (unsigned long long)rx,
			       (unsigned long long)(st->rx_bytes - s0->rx_bytes),
			       (unsigned long long)tx,
			       (unsigned long long)(st->tx_bytes - s0->tx_bytes),
			       (unsigned long long)out, (unsigned long long)in,
			       (unsigned long long)(fz->n_pkts - fz->on_rx.packets),
			       (unsigned long long)(fz->bytes_delivered - fz->on_rx.bytes),
			       (unsigned long long)(fz->sent + fz->on_tx.packets),
			       (unsigned long long)(fz->bytes_sent + fz->on_tx.bytes),
			       (unsigned long long)(in + fz->on_fwd.packets + peer),
			       (unsigned long long)fz->on_fwd.packets);
	if (frags != fz->frags_delivered - fz->on_rx.frags ||
	    descs != fz->frags_sent + fz->on_tx.frags ||
	    refused != lies + peer || bad != bads)
		return fz_fail(fz, "committed counters rx_frags %llu tx_descs %llu chain_invalid "
			       "%llu bad_descs %llu; the kernel and the rings say %llu, %llu, %llu, "
			       "%llu", (unsigned long long)frags, (unsigned long long)descs,
			       (unsigned long long)refused, (unsigned long long)bad,
			       (unsigned long long)(fz->frags_delivered - fz->on_rx.frags),
			       (unsigned long long)(fz->frags_sent + fz->on_tx.frags),
			       (unsigned long long)(lies + peer), (unsigned long long)bads);
	return 0;
}

/*
 * With every port alive and between iterations: every frame in exactly
 * one place, each worker's committed counts what the places hold, every
 * delivered packet sent, dropped or on its way exactly once, and the
 * committed counters saying the same.
 */
/* over 80 lines: one pass, each check using what those before it found */
static int fz_scan(struct fuzz *fz)
{
	struct fp_frames *frames = PyMem_Calloc(fz->n, sizeof(*frames));
	struct fp_stats st;
	uint64_t missing = 0, first = 0;
	int err = -1;

	if (!frames) {
		PyErr_NoMemory();
		return -1;
	}
	fz->scans++;
	fz->pass++;
	fz->on_rx = fz->on_fwd = fz->on_tx = (struct fz_way){ 0 };
	fz->lies_on_rx = fz->bad_on_rx = fz->lies_on_fwd = fz->bad_on_fwd = 0;
	memset(fz->where, 0xff, fz->nframes * sizeof(*fz->where));
	memset(fz->cnt, 0, fz->n * sizeof(*fz->cnt));
	fz_stats_sum(fz, &st, frames);

	for (uint32_t w = 0; w < fz->n; w++) {
		const uint64_t *fl = ctl_freelist(fz->v, w);
		uint64_t word = __atomic_load_n(&ctl_worker(fz->v, w)->commit.word,
						__ATOMIC_ACQUIRE);

		if (word & 1) {
			fz_fail(fz, "worker %u's commit is still pending", w);
			goto out;
		}
		if (frames[w].free > fz->fpw) {
			fz_fail(fz, "worker %u committed %llu free frames, more than its %u", w,
				(unsigned long long)frames[w].free, fz->fpw);
			goto out;
		}
		for (uint64_t i = 0; i < frames[w].free; i++) {
			if (fz_place(fz, fl[i], FZ_LOC(FZ_LOC_FREE, w, 0)))
				goto out;
		}
	}
	for (uint32_t x = 0; x < fz->n; x++) {
		PortObject *p = fz->ports[x];
		struct fz_kernel *k = &fz->k[x];

		for (uint32_t j = 0; j < p->n_direct; j++) {
			if (p->direct[j].open &&
			    fz_scan_ring(fz, &p->direct[j].tx, true, FZ_LOC(FZ_LOC_DTX, x, j),
					 &fz->on_tx))
				goto out;
		}
		if (fz_scan_ring(fz, &p->fill, false, FZ_LOC(FZ_LOC_FILL, x, 0), NULL) ||
		    fz_scan_ring(fz, &p->rx, true, FZ_LOC(FZ_LOC_RX, x, 0), &fz->on_rx) ||
		    fz_scan_ring(fz, &p->tx, true, FZ_LOC(FZ_LOC_TX, x, 0), &fz->on_tx) ||
		    fz_scan_ring(fz, &p->comp, false, FZ_LOC(FZ_LOC_COMP, x, 0), NULL))
			goto out;
		for (uint32_t i = 0; i < k->n_fill; i++) {
			if (fz_place(fz, k->fill[i], FZ_LOC(FZ_LOC_KFILL, x, 0)))
				goto out;
		}
		for (uint32_t i = 0; i < k->n_tx; i++) {
			if (fz_place(fz, k->tx[i], FZ_LOC(FZ_LOC_KTX, x, 0)))
				goto out;
		}
		for (uint32_t y = 0; y < fz->n; y++) {
			if (y == x)
				continue;
			if (fz_scan_hring(fz, ctl_ring(fz->v, 0, x, y), FZ_LOC(FZ_LOC_FWD, x, y),
					  &fz->on_fwd) ||
			    fz_scan_hring(fz, ctl_ring(fz->v, 1, x, y), FZ_LOC(FZ_LOC_RET, x, y),
					  NULL))
				goto out;
		}
	}
	for (uint64_t f = 0; f < fz->nframes; f++) {
		if (fz->where[f] == FZ_NOWHERE && !missing++)
			first = f;
	}
	if (missing) {
		fz_fail(fz, "%llu frames are nowhere (not on a free list, in a ring or in the "
			"kernel), frame %llu (worker %llu's) first", (unsigned long long)missing,
			(unsigned long long)first, (unsigned long long)(first / fz->fpw));
		goto out;
	}
	/* An owner counts its members' use of its frames when it next looks
	 * (port_sync_members): until then, what they took is still rx to
	 * it, and what they sent of it still handoff. */
	for (uint32_t w = 0; w < fz->n; w++) {
		struct fp_counts k;
		uint64_t lag_rx, lag_tx;

		if (fz_owner(fz, w) == w)
			continue;
		ctl_counts(fz->v, w, &k);
		lag_rx = k.fanout.took_rx;
		lag_tx = k.fanout.took_tx;
		fz->cnt[fz_owner(fz, w)][FZ_RX] += lag_rx;
		fz->cnt[fz_owner(fz, w)][FZ_HANDOFF] += lag_tx - lag_rx;
		fz->cnt[fz_owner(fz, w)][FZ_TX] -= lag_tx;
	}
	for (uint32_t w = 0; w < fz->n; w++) {
		struct fp_counts k;

		if (!fz->ports[w]->n_members)
			continue;
		ctl_counts(fz->v, w, &k);
		fz->cnt[w][FZ_RX] -= k.fanout.seen_rx;
		fz->cnt[w][FZ_HANDOFF] += k.fanout.seen_rx - k.fanout.seen_tx;
		fz->cnt[w][FZ_TX] += k.fanout.seen_tx;
	}
	for (uint32_t w = 0; w < fz->n; w++) {
		const uint64_t *c = fz->cnt[w];
		const struct fp_frames *m = &frames[w];

		if (m->free != c[FZ_FREE] || m->rx != c[FZ_RX] || m->tx != c[FZ_TX] ||
		    m->handoff != c[FZ_HANDOFF] ||
		    m->free + m->rx + m->tx + m->handoff != fz->fpw) {
			fz_fail(fz, "worker %u committed free %llu rx %llu tx %llu handoff %llu "
				"(of %u); its frames are: free %llu rx %llu tx %llu handoff %llu",
				w, (unsigned long long)m->free, (unsigned long long)m->rx,
				(unsigned long long)m->tx, (unsigned long long)m->handoff, fz->fpw,
				(unsigned long long)c[FZ_FREE], (unsigned long long)c[FZ_RX],
				(unsigned long long)c[FZ_TX], (unsigned long long)c[FZ_HANDOFF]);
			goto out;
		}
	}
	/* a rule counts only packets its worker received (and starts again
	 * from zero when the rules change): never more, killed or not */
	for (uint32_t w = 0; w < fz->n; w++) {
		struct fp_counts k;
		uint64_t pk = 0, by = 0;

		ctl_counts(fz->v, w, &k);
		for (int r = 0; r < FP_MAX_RULES; r++) {
			pk += k.stats.rule_packets[r];
			by += k.stats.rule_bytes[r];
		}
		if (pk > k.stats.rx_packets || by > k.stats.rx_bytes) {
			fz_fail(fz, "worker %u's rules counted %llu packets, %llu bytes; it received "
				"%llu, %llu", w, (unsigned long long)pk, (unsigned long long)by,
				(unsigned long long)k.stats.rx_packets,
				(unsigned long long)k.stats.rx_bytes);
			goto out;
		}
	}
	if (fz_counters(fz, &st))
		goto out;
	err = 0;
out:
	PyMem_Free(frames);
	return err;
}

/*
 * The end of a run: the replacements start, the kernel sends and
 * completes everything and receives nothing more, the ports step until
 * nothing moves.  Then nothing may be left on its way.
 */
static int fz_settle(struct fuzz *fz)
{
	for (uint32_t x = 0; x < fz->n; x++) {
		if (fz->dead[x] && fz_revive(fz, x))
			return -1;
	}
	/* a lying kernel's producer far ahead keeps the ports busy forever */
	uint32_t rounds = fz->exact ? 100000 : 64, round;

	for (round = 0; round < rounds; round++) {
		uint64_t moved = 0;

		for (uint32_t x = 0; x < fz->n; x++) {
			moved += fz_send(fz, x, UINT32_MAX);
			moved += fz_complete(fz, x, UINT32_MAX);
			moved += port_step(fz->ports[x]);
		}
		if (PyErr_Occurred())
			return -1;
		if (!moved)
			break;
	}
	if (!fz->exact)
		return 0;
	if (round == rounds)
		return fz_fail(fz, "still moving frames %u rounds after the end", rounds);
	if (fz_scan(fz))
		return -1;
	if (fz->on_rx.packets || fz->on_fwd.packets || fz->on_tx.packets)
		return fz_fail(fz, "stuck after the end: %llu packets on RX, %llu on fwd and "
			       "%llu on TX rings", (unsigned long long)fz->on_rx.packets,
			       (unsigned long long)fz->on_fwd.packets,
			       (unsigned long long)fz->on_tx.packets);
	return 0;
}

static int fz_act(struct fuzz *fz, enum fz_action a, uint32_t x)
{
	uint32_t max = 1 + fz_below(fz, 2 * fz->s.cfg.batch);

	fz->actions[a]++;
	switch (a) {
	case FZ_STEP:
		if (!fz->dead[x])
			port_step(fz->ports[x]);
		break;
	case FZ_TAKE_FILL:
		fz_take_fill(fz, x, max);
		break;
	case FZ_RECEIVE:
		fz_receive(fz, x, max);
		break;
	case FZ_SEND:
		fz_send(fz, x, max);
		break;
	case FZ_COMPLETE:
		fz_complete(fz, x, max);
		break;
	case FZ_TABLE:
		fz_table(fz);
		break;
	case FZ_LIE_RX:
		fz_lie_rx(fz, x);
		break;
	case FZ_LIE_COMP:
		fz_lie_comp(fz, x);
		break;
	case FZ_LIE_INDEX:
		fz_lie_index(fz, x);
		break;
	case FZ_LIE_FWD:
		fz_lie_fwd(fz, x);
		break;
	case FZ_LIE_RET:
		fz_lie_ret(fz, x);
		break;
	case FZ_LIE_PEER_INDEX:
		fz_lie_peer_index(fz, x);
		break;
	case FZ_LIE_TABLE:
		fz_lie_table(fz);
		break;
	case FZ_LIE_STATE:
		fz_lie_state(fz);
		break;
	case FZ_BAD_CHAIN:
		fz_bad_chain(fz, x);
		break;
	case FZ_LIE_CHAIN:
		fz_lie_chain(fz, x);
		break;
	case FZ_LIE_FWD_CHAIN:
		fz_lie_fwd_chain(fz, x);
		break;
	case FZ_BAD_FWD_CHAIN:
		fz_bad_fwd_chain(fz, x);
		break;
	case FZ__MAX:
		break;
	}
	return PyErr_Occurred() ? -1 : 0;
}

/* How often action a is picked in this run: a lie only with misbehave,
 * a chain's only with max_segs. */
static uint32_t fz_weight(const struct fuzz *fz, int a)
{
	if ((fz_actions[a].lie && !fz->lie) || (fz_actions[a].chains && !fz->max_segs))
		return 0;
	return fz_actions[a].weight;
}

static int fz_run(struct fuzz *fz, uint64_t steps, uint32_t check_every)
{
	uint32_t total = 0;

	for (int a = 0; a < FZ__MAX; a++)
		total += fz_weight(fz, a);
	fz_table(fz);
	for (fz->step = 0; fz->step < steps; fz->step++) {
		uint32_t x = fz_below(fz, fz->n), pick = fz_below(fz, total);
		int a = FZ_STEP;

		if (fz->crash_every && !fz->dead[x] && !fz_below(fz, fz->crash_every)) {
			fz_kill(fz, x);
		} else {
			for (int i = 0; i < FZ__MAX; i++) {
				uint32_t w = fz_weight(fz, i);

				if (pick < w) {
					a = i;
					break;
				}
				pick -= w;
			}
			if (fz_act(fz, a, x))
				return -1;
		}
		for (uint32_t w = 0; fz->n_dead && w < fz->n; w++) {
			if (fz->dead[w] && !--fz->dead[w] && fz_revive(fz, w))
				return -1;
		}
		if (fz->exact && !fz->n_dead && check_every && !(fz->step % check_every) &&
		    fz_scan(fz))
			return -1;
		if (!(fz->step & 4095) && PyErr_CheckSignals())
			return -1;
	}
	return fz_settle(fz);
}

static PyObject *fz_result(struct fuzz *fz)
{
	PyObject *actions = PyDict_New(), *kills = PyDict_New();
	struct fp_stats st;
	uint64_t crashes = 0;

	if (!actions || !kills)
		goto fail;
	for (int a = 0; a < FZ__MAX; a++) {
		PyObject *v;

		if (!fz_weight(fz, a))
			continue;
		v = PyLong_FromUnsignedLongLong(fz->actions[a]);
		if (!v || PyDict_SetItemString(actions, fz_actions[a].name, v)) {
			Py_XDECREF(v);
			goto fail;
		}
		Py_DECREF(v);
	}
	for (int k = 0; k < FZ_KILL__MAX; k++) {
		PyObject *v = PyLong_FromUnsignedLongLong(fz->kills[k]);

		if (!v || PyDict_SetItemString(kills, fz_kill_names[k], v)) {
			Py_XDECREF(v);
			goto fail;
		}
		Py_DECREF(v);
		crashes += fz->kills[k];
	}
	fz_stats_sum(fz, &st, NULL);
	return Py_BuildValue("{sKsKsIsOsOsIsKsNsNsKsKsKsKsKsKsIsKsKsKsKsK}",
			     "seed", (unsigned long long)fz->seed,
			     "steps", (unsigned long long)fz->step, "workers", fz->n,
			     "misbehave", fz->lie ? Py_True : Py_False,
			     "exact", fz->exact ? Py_True : Py_False,
			     "crash_every", fz->crash_every,
			     "crashes", (unsigned long long)crashes,
			     "actions", actions, "kills", kills,
			     "scans", (unsigned long long)fz->scans,
			     "frames", (unsigned long long)(fz->exact ? fz->nframes : 0),
			     "packets", (unsigned long long)fz->n_pkts,
			     "transmitted", (unsigned long long)fz->sent,
			     "dropped", (unsigned long long)(fz_drops(&st) - fz_drops(&fz->st0)),
			     "bad_descs", (unsigned long long)(st.bad_descs - fz->st0.bad_descs),
			     "max_segs", fz->max_segs,
			     "fragments", (unsigned long long)fz->frags_delivered,
			     "chains", (unsigned long long)fz->chains,
			     "bad_chains", (unsigned long long)(fz->n_lies + fz->fwd_lies),
			     "checksums", (unsigned long long)fz->csums,
			     "chain_invalid", (unsigned long long)(st.drops[FP_DROP_CHAIN_INVALID] -
					     fz->st0.drops[FP_DROP_CHAIN_INVALID]));
fail:
	Py_XDECREF(actions);
	Py_XDECREF(kills);
	return NULL;
}

PyDoc_STRVAR(fp_fuzz_doc,
"fuzz(control, umem_fd, umem_size, seed, steps, *, ring_sizes=(32, 32, 64, 64),\n"
"     batch=16, crash_every=0, misbehave=None, check_every=64, max_segs=0) -> dict\n"
"\n"
"Drive the workers' fast path (port_step) on synthetic AF_XDP rings with a\n"
"seeded random schedule of steps: the emulated kernel taking FILL buffers,\n"
"receiving into them, sending and completing, a little at a time and in\n"
"random order; random ports stepping; random forwarding tables.  All in\n"
"this thread; the same seed gives the same run.\n"
"\n"
"control      a Control freshly format()ted, set_worker() done (the netdev\n"
"             indices say which rule applies to whom)\n"
"umem_fd      memfd of the UMEM, umem_size bytes, at least nworkers *\n"
"             frames_per_worker * frame_size; anything past the frames is\n"
"             never to be touched (poisoned under AddressSanitizer)\n"
"ring_sizes   (rx, tx, fill, completion) of every port, powers of two\n"
"batch        the ports' batch_size\n"
"misbehave    the kernel and the peers also lie: descriptors and ring\n"
"             entries with bad addresses and lengths, indices jumping,\n"
"             tables and worker states of garbage.  Default: when\n"
"             crash_every is 0\n"
"crash_every  kill a port at a random point of an iteration on average\n"
"             every crash_every steps (before its commit point, right\n"
"             after it, half through its redo log, after the commit) and\n"
"             start a fresh port over the same rings and slot some steps\n"
"             later (port_recover)\n"
"check_every  without misbehave: the exact check every check_every steps\n"
"             while no port is dead (0: only at the end)\n"
"max_segs     the ports' (descriptor chains; 0: none, else 2..64 and at\n"
"             most batch): the kernel then delivers chains of up to\n"
"             min(max_segs, 6) fragments and, now and then, one the ports\n"
"             must refuse (kernel_bad_chain; a peer spoils one it lent:\n"
"             peer_bad_chain; both checked exactly too); lying, the kernel\n"
"             and the peers make up chains of every kind\n"
"\n"
"Without misbehave, everything is checked exactly, during the run and once\n"
"more after the kernel and the ports settled at the end: every UMEM frame\n"
"in exactly one place (free lists up to the committed counts, FILL, RX,\n"
"TX and COMPLETION rings between their indices, the emulated kernel's\n"
"hands, fwd and ret rings), each worker's committed counts matching;\n"
"every packet delivered transmitted exactly once (with its length; a\n"
"chain whole, in order, its fragments' bytes intact, a partial checksum\n"
"completed where its netdev asks for it), dropped, or still on its way;\n"
"the committed counters (rx_packets, tx_packets, rx_frags, tx_descs,\n"
"handoffs, drops) matching; no bad_descs but kernel_bad_chain's and\n"
"peer_bad_chain's, each of those chains once in chain_invalid, its\n"
"frames home.  A violation raises\n"
"RuntimeError naming the seed, the step and what is wrong.\n"
"\n"
"Returns {seed, steps, workers, misbehave, exact, crash_every, crashes,\n"
"actions (by kind), kills (by where in the iteration), scans (exact\n"
"checks passed), frames (accounted by the last check), packets\n"
"(delivered), transmitted, dropped, bad_descs, max_segs, fragments\n"
"(descriptors delivered), chains (packets of several), bad_chains\n"
"(kernel_bad_chain's and peer_bad_chain's), checksums (partial ones\n"
"checked when sent),\n"
"chain_invalid}; the counts of packets only in exact runs.  The control\n"
"area is left as the run ends; format() it again before the next run.");

/* over 80 lines: the set-up and tear-down around fz_run(), in order */
static PyObject *fp_fuzz(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"control", "umem_fd", "umem_size", "seed", "steps",
				 "ring_sizes", "batch", "crash_every", "misbehave",
				 "check_every", "max_segs", NULL};
	struct port_cfg cfg = { .xsk_fd = -1, .rx = 32, .tx = 32, .fill = 64, .comp = 64,
				.batch = 16 };
	unsigned long long umem_size, seed, steps;
	unsigned int crash_every = 0, check_every = 64;
	PyObject *control, *misbehave = Py_None, *result = NULL;
	struct fuzz fz = { 0 };
	bool opened = false, poisoned = false;
	struct fp_header *h;
	ControlObject *c;
	uint64_t z;
	int lie;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "OiKKK|$(IIII)IIOII", kwlist,
					 &control, &cfg.umem_fd, &umem_size,
					 &seed, &steps, &cfg.rx, &cfg.tx, &cfg.fill, &cfg.comp,
					 &cfg.batch, &crash_every, &misbehave, &check_every,
					 &cfg.max_segs))
		return NULL;
	lie = misbehave == Py_None ? crash_every == 0 : PyObject_IsTrue(misbehave);
	if (lie < 0)
		return NULL;
	c = testing_control(control);
	if (!c)
		return NULL;
	if (ctl_check(c))
		return NULL;
	h = ctl_hdr(&c->v);
	cfg.umem_size = umem_size;
	fz.v = &c->v;
	fz.h = h;
	fz.n = h->nworkers;
	fz.fpw = h->frames_per_worker;
	fz.fs = h->frame_size;
	fz.entries = h->ring_entries;
	fz.span = (uint64_t)fz.fpw * fz.fs;
	fz.frames_end = fz.n * fz.span;
	fz.nframes = (uint64_t)fz.n * fz.fpw;
	fz.umem_size = umem_size;
	fz.seed = seed;
	/* splitmix64's finaliser: nearby seeds start far apart, never at 0 */
	z = seed + 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	fz.rng = (z ^ (z >> 31)) | 1;
	fz.lie = lie;
	fz.exact = !lie;
	fz.crash_every = crash_every;
	fz.max_segs = cfg.max_segs;	/* port_open() checks it */
	fz.kcap = (uint32_t)fz.nframes;
	for (uint32_t w = 0; w < fz.n; w++) {
		uint32_t nd = ctl_assign(fz.v, w)->netdev + 1;

		if (nd > fz.ndevs)
			fz.ndevs = nd < FP_MAX_NETDEVS ? nd : FP_MAX_NETDEVS;
	}

	fz.k = PyMem_Calloc(fz.n, sizeof(*fz.k));
	fz.dead = PyMem_Calloc(fz.n, sizeof(*fz.dead));
	fz.where = PyMem_Calloc(fz.nframes, sizeof(*fz.where));
	fz.fr = PyMem_Calloc(fz.nframes, sizeof(*fz.fr));
	fz.cnt = PyMem_Calloc(fz.n, sizeof(*fz.cnt));
	if (!fz.k || !fz.dead || !fz.where || !fz.fr || !fz.cnt) {
		PyErr_NoMemory();
		goto out;
	}
	for (uint32_t w = 0; w < fz.n; w++) {
		fz.k[w].fill = PyMem_Calloc(fz.kcap, sizeof(uint64_t));
		fz.k[w].tx = PyMem_Calloc(fz.kcap, sizeof(uint64_t));
		if (!fz.k[w].fill || !fz.k[w].tx) {
			PyErr_NoMemory();
			goto out;
		}
	}
	if (synth_open(&fz.s, c, &cfg))
		goto out;
	opened = true;
	fz.ports = fz.s.ports;
	fz_stats_sum(&fz, &fz.st0, NULL);
	fz_poison_area(&fz, true);
	for (uint32_t w = 0; w < fz.n; w++)
		fz_poison_port(&fz, fz.ports[w], true);
	poisoned = true;

	if (fz_run(&fz, steps, check_every))
		goto out;
	for (uint32_t w = 0; w < fz.n; w++)
		fz_poison_port(&fz, fz.ports[w], false);
	fz_poison_area(&fz, false);
	poisoned = false;
	result = fz_result(&fz);
out:
	if (poisoned) {
		for (uint32_t w = 0; w < fz.n; w++)
			fz_poison_port(&fz, fz.ports[w], false);
		fz_poison_area(&fz, false);
	}
	/* a garbage table may have left any number here */
	c->v.tab->active_table &= 1;
	if (opened && result) {
		synth_stop(&fz.s);
	} else if (opened) {
		/* a port killed at its commit point must not commit again */
		for (uint32_t w = 0; w < fz.n; w++)
			__atomic_store_n(&fz.ports[w]->me->state, FP_STATE_STOPPED,
					 __ATOMIC_RELEASE);
	}
	synth_close(&fz.s);
	if (fz.k) {
		for (uint32_t w = 0; w < fz.n; w++) {
			PyMem_Free(fz.k[w].fill);
			PyMem_Free(fz.k[w].tx);
		}
	}
	PyMem_Free(fz.k);
	PyMem_Free(fz.dead);
	PyMem_Free(fz.where);
	PyMem_Free(fz.fr);
	PyMem_Free(fz.cnt);
	PyMem_Free(fz.pkts);
	return result;
}


static PyMethodDef testing_methods[] = {
	FP_METHODS,
	{"microbench", (PyCFunction)(void (*)(void))fp_microbench, METH_VARARGS | METH_KEYWORDS,
	 fp_microbench_doc},
	{"fuzz", (PyCFunction)(void (*)(void))fp_fuzz, METH_VARARGS | METH_KEYWORDS, fp_fuzz_doc},
	{NULL}
};

static struct PyModuleDef testing_module = {
	.m_base = PyModuleDef_HEAD_INIT,
	.m_name = "_fastpath_testing",
	.m_doc = "xdpd's per-packet loop with its microbenchmark and fuzzer (tests only)",
	.m_size = -1,
	.m_methods = testing_methods,
};

PyMODINIT_FUNC PyInit__fastpath_testing(void)
{
	return fp_module_create(&testing_module);
}
