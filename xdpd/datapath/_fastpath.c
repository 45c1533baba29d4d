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
 *
 * One translation unit.  The fast path is split into the files below, and
 * this file includes them, in this order (a unity build): the loop step is
 * inlined across them exactly as when it was one file, and each file sees
 * what the ones before it define.  setup.py compiles this file alone (the
 * others are its `depends`); testing/fastpath_testing.c includes it.  None
 * of the others is compiled on its own.
 *   ring.h     AF_XDP rings and handoff rings: index discipline, atomics
 *   parse.h    a packet's bytes: parsing, rule matches, checksums, VLAN
 *              tags, MACs
 *   cbpf.h     classic BPF (capture filters): checked, then run on a frame
 *   layout.h   where the control area's parts are (ctl_*)
 *   table.c    rule dicts from Python into struct fp_rule
 *   control.c  the Control object
 *   port.h     the Port's state (PortObject) and what it is built from
 *   commit.c   the commit record and redo log (redo_*, port_commit*),
 *              recovery (port_recover)
 *   frames.c   frame ownership: address checks, free list, ret ring
 *   direct.c   direct transmission (direct_*)
 *   capture.c  capture: the armed slots, a frame into a capture ring
 *   capctl.c   the Control object's capture methods (arm, read)
 *   hosting.c  the Control object's hosting methods (set_host, claim)
 *   rx.c       step 4, the RX ring: the receive paths
 *   chain.c    descriptor chains (multi-buffer): their receive path and
 *              their fwd ring entries onto the TX ring; port_receive()
 *   loop.c     the loop step (port_step) and its other numbered steps
 *   port.c     the Port object: open, run, drained
 * This file owns the module (its functions, method table and init) and the
 * system headers every unit uses; it must hold no fast-path code.
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
/* Multi-buffer AF_XDP (Linux 6.6): newer than some distributions' headers */
#ifndef XDP_USE_SG
#define XDP_USE_SG (1 << 4)
#endif
#ifndef XDP_PKT_CONTD
#define XDP_PKT_CONTD (1 << 0)
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#include "ring.h"
#include "parse.h"
#include "cbpf.h"
#include "layout.h"
#include "table.c"
#include "control.c"
#include "port.h"
#include "commit.c"
#include "frames.c"
#include "direct.c"
#include "capture.c"
#include "capctl.c"
#include "hosting.c"
#include "rx.c"
#include "chain.c"
#include "loop.c"
#include "port.c"

/* ---------------------------------------------------------------------- */
/* Module functions                                                        */

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

/* A classic BPF program from Python (struct sock_filter array bytes) into
 * *f and *n, checked: NULL and ValueError naming why when cbpf_check()
 * refuses it. */
static int filter_arg(Py_buffer *b, const struct sock_filter **f, uint32_t *n)
{
	enum cbpf_refusal why;

	if (b->len % sizeof(struct sock_filter) || b->len / sizeof(struct sock_filter) > UINT32_MAX) {
		PyErr_Format(PyExc_ValueError, "a filter is whole %zu-byte instructions, not %zd "
			     "bytes", sizeof(struct sock_filter), b->len);
		return -1;
	}
	*f = b->buf;
	*n = (uint32_t)(b->len / sizeof(struct sock_filter));
	why = cbpf_check(*f, *n);
	if (why != CBPF_OK) {
		PyErr_Format(PyExc_ValueError, "filter refused: %s", cbpf_refusal_names[why]);
		return -1;
	}
	return 0;
}

/* filter_check(program) -> None, or ValueError: what a worker accepts. */
static PyObject *fp_filter_check(PyObject *self, PyObject *args)
{
	const struct sock_filter *f;
	Py_buffer b;
	uint32_t n;
	int err;

	if (!PyArg_ParseTuple(args, "y*", &b))
		return NULL;
	err = filter_arg(&b, &f, &n);
	PyBuffer_Release(&b);
	if (err)
		return NULL;
	Py_RETURN_NONE;
}

/* filter_run(program, frame, wirelen=len(frame)) -> what the checked
 * program returns on the frame (0: no match; else a snap length). */
static PyObject *fp_filter_run(PyObject *self, PyObject *args)
{
	const struct sock_filter *f;
	Py_buffer b, frame;
	long long wirelen = -1;
	uint32_t n, ret = 0;
	int err;

	if (!PyArg_ParseTuple(args, "y*y*|L", &b, &frame, &wirelen))
		return NULL;
	err = filter_arg(&b, &f, &n);
	if (!err && (frame.len > UINT32_MAX || wirelen > UINT32_MAX)) {
		PyErr_SetString(PyExc_ValueError, "frame too long");
		err = -1;
	}
	if (!err)
		ret = cbpf_run(f, n, frame.buf, (uint32_t)frame.len,
			       wirelen < 0 ? (uint32_t)frame.len : (uint32_t)wirelen);
	PyBuffer_Release(&b);
	PyBuffer_Release(&frame);
	return err ? NULL : PyLong_FromUnsignedLong(ret);
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
	{"filter_check", fp_filter_check, METH_VARARGS, \
	 "filter_check(program) -> None; ValueError when a worker would refuse it"}, \
	{"filter_run", fp_filter_run, METH_VARARGS, \
	 "filter_run(program, frame, wirelen=len(frame)) -> the classic BPF program's return"}, \
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
	PyModule_AddIntConstant(m, "MAX_HOSTED", FP_MAX_HOSTED);
	PyModule_AddIntConstant(m, "MAX_CAPTURES", FP_MAX_CAPTURES);
	PyModule_AddIntConstant(m, "CAPTURE_RING", FP_CAPTURE_RING);
	PyModule_AddIntConstant(m, "CAP_RX", FP_CAP_RX);
	PyModule_AddIntConstant(m, "CAP_TX", FP_CAP_TX);
	PyModule_AddIntConstant(m, "CAP_DROP", FP_CAP_DROP);
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
