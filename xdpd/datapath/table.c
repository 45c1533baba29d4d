// SPDX-License-Identifier: GPL-2.0
/*
 * table.c: a forwarding table as Python gives it to write_table() (a rule
 * dict, or a list of them, per netdev; the netdevs whose checksums are
 * completed; the direct sockets allowed) made into struct fp_rule, struct
 * fp_netdev and flags, every field checked and bounded on the way.  Part of
 * _fastpath.c's unity build; control.c's write_table() calls it.  Fills
 * the caller's structs only: must not write the tables area itself, and
 * nothing on the packet path may call it.
 */

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

/* A rule's "action": "forward", "drop", or none (absent, None). */
static int rule_action(PyObject *d, struct fp_rule *r)
{
	PyObject *o = PyDict_GetItemString(d, "action");

	if (!o || !PyUnicode_Check(o))
		return 0;
	if (PyUnicode_CompareWithASCIIString(o, "forward") == 0) {
		r->action = FP_ACT_FORWARD;
	} else if (PyUnicode_CompareWithASCIIString(o, "drop") == 0) {
		r->action = FP_ACT_DROP;
	} else {
		PyErr_SetString(PyExc_ValueError, "action must be forward or drop");
		return -1;
	}
	return 0;
}

/* A rule's "egress": the worker ids it sends to, each below nworkers. */
static int rule_egress(PyObject *d, struct fp_rule *r, uint32_t nworkers)
{
	PyObject *o = PyDict_GetItemString(d, "egress"), *seq;
	Py_ssize_t n;

	if (!o)
		return 0;
	seq = PySequence_Fast(o, "egress must be a sequence");
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
	return 0;
}

/* A rule's MAC rewrite: "set_dst_mac", "set_src_mac", "swap_macs". */
static int rule_macs(PyObject *d, struct fp_rule *r)
{
	PyObject *o;
	int set;

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
	return 0;
}

/* A rule's VLAN action: "push_vlan" (with "vlan_proto") or "pop_vlan". */
static int rule_vlan(PyObject *d, struct fp_rule *r)
{
	PyObject *o = PyDict_GetItemString(d, "push_vlan");

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
	return 0;
}

/* A rule's "match" (struct fp_match, as bytes), its "id" and "max_len". */
static int rule_match(PyObject *d, struct fp_rule *r)
{
	PyObject *o = PyDict_GetItemString(d, "match");

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
	memset(r, 0, sizeof(*r));
	if (d == Py_None)
		return 0;
	if (!PyDict_Check(d)) {
		PyErr_SetString(PyExc_TypeError, "rule must be a dict or None");
		return -1;
	}
	if (rule_action(d, r) || rule_egress(d, r, nworkers))
		return -1;
	if (r->action == FP_ACT_FORWARD && r->n_egress == 0) {
		PyErr_SetString(PyExc_ValueError, "forward rule without egress workers");
		return -1;
	}
	if (rule_macs(d, r) || rule_vlan(d, r))
		return -1;
	if (r->vlan_op != FP_VLAN_NONE && r->action != FP_ACT_FORWARD) {
		PyErr_SetString(PyExc_ValueError, "push_vlan/pop_vlan on a rule that does not forward");
		return -1;
	}
	return rule_match(d, r);
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

/* write_table()'s direct_ok: {worker slot: bits}, bit j letting the slot
 * send on its direct socket j, into direct_ok by slot (None: none). */
static int direct_ok_from_obj(PyObject *dok, uint32_t nworkers, uint8_t *direct_ok)
{
	PyObject *key, *value;
	Py_ssize_t pos = 0;

	if (!dok || dok == Py_None)
		return 0;
	if (!PyDict_Check(dok)) {
		PyErr_Format(PyExc_TypeError, "direct_ok must be a dict {worker slot: bits}");
		return -1;
	}
	while (PyDict_Next(dok, &pos, &key, &value)) {
		long w = PyLong_AsLong(key), bits = PyLong_AsLong(value);

		if (PyErr_Occurred())
			return -1;
		if (w < 0 || w >= (long)nworkers || bits < 0 || bits > 0xff) {
			PyErr_Format(PyExc_ValueError, "direct_ok: slot %ld bits %ld out of range",
				     w, bits);
			return -1;
		}
		direct_ok[w] = (uint8_t)bits;
	}
	return 0;
}

/* write_table()'s complete_checksums: netdev indexes, each flagged
 * FP_NETDEV_CSUM_COMPLETE in flags (None: none). */
static int csum_flags_from_obj(PyObject *csum, uint32_t *flags)
{
	PyObject *cs;

	if (!csum || csum == Py_None)
		return 0;
	cs = PySequence_Fast(csum, "complete_checksums must be a sequence of netdev indexes");
	if (!cs)
		return -1;
	for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(cs); k++) {
		long nd = PyLong_AsLong(PySequence_Fast_GET_ITEM(cs, k));

		if (nd < 0 || nd >= FP_MAX_NETDEVS) {
			Py_DECREF(cs);
			if (!PyErr_Occurred())
				PyErr_Format(PyExc_ValueError, "netdev index %ld out of range 0..%d",
					     nd, FP_MAX_NETDEVS - 1);
			return -1;
		}
		flags[nd] = FP_NETDEV_CSUM_COMPLETE;
	}
	Py_DECREF(cs);
	return 0;
}
