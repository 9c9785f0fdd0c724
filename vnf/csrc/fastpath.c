/*
 * vnf._fastpath - Python face of nf.h: parse, hash and rewrite in C.
 *
 * parse_batch() is the one that matters for speed: it parses a whole burst (an AF_PACKET ring
 * block, a DPDK burst copied out) in one call, writing the 5-tuples, flow hashes and drop reasons
 * into caller-owned arrays (numpy arrays in practice), so the Python loop only does the flow-table
 * lookup. The other functions exist mainly so tests can compare C with vnf/packet.py and
 * vnf/rewrite.py.
 *
 * Plain CPython C API and the buffer protocol: no numpy headers, any buffer works (bytes,
 * bytearray, mmap, numpy arrays).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "nf.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* Get a C-contiguous buffer of integers with the given item size and at least count items. */
static int get_int_array(PyObject *obj, Py_buffer *view, const char *name, Py_ssize_t itemsize,
                         Py_ssize_t count, int writable)
{
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *fmt = view->format ? view->format : "B";
    char kind = fmt[strlen(fmt) - 1];
    if (view->itemsize != itemsize || !strchr("bBhHiIlLqQ", kind)) {
        PyErr_Format(PyExc_TypeError, "%s: need an integer array of %zd-byte items, got format "
                     "'%s' with %zd-byte items", name, itemsize, fmt, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (view->len / itemsize < count) {
        PyErr_Format(PyExc_ValueError, "%s: has %zd items, need at least %zd", name,
                     view->len / itemsize, count);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *parsed_tuple(int reason, const struct nf_parsed *p)
{
    uint32_t hash = reason == NF_OK ? nf_flow_hash(p) : 0;
    PyObject *vlan = p->vlan < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(p->vlan);
    if (!vlan)
        return NULL;
    return Py_BuildValue("(iIIiiiIiiN)", reason, p->src_ip, p->dst_ip, (int)p->src_port,
                         (int)p->dst_port, (int)p->proto, hash, (int)p->l3_offset,
                         (int)p->l4_offset, vlan);
}

/* ---- parse_one / parse_batch ------------------------------------------------------------- */

PyDoc_STRVAR(parse_one_doc,
"parse_one(frame) -> (reason, src_ip, dst_ip, src_port, dst_port, proto, hash,\n"
"                     l3_offset, l4_offset, vlan)\n\n"
"nf_parse + nf_flow_hash on one frame. reason indexes vnf.packet.REASONS (0 = ok);\n"
"on a drop all other fields are 0 and vlan is None, as in vnf.packet.parse_frame.");

static PyObject *parse_one(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    struct nf_parsed p;
    uint32_t len = view.len > UINT32_MAX ? UINT32_MAX : (uint32_t)view.len;
    int reason = nf_parse(view.buf, len, &p);
    PyBuffer_Release(&view);
    return parsed_tuple(reason, &p);
}

PyDoc_STRVAR(parse_batch_doc,
"parse_batch(buf, offsets, lengths, count, out_src_ip, out_dst_ip, out_src_port,\n"
"            out_dst_port, out_proto, out_hash, out_reason, out_l4_offset) -> int\n\n"
"Parse count frames; frame i is buf[offsets[i]:offsets[i] + lengths[i]].\n"
"offsets, lengths, out_src_ip, out_dst_ip, out_hash: uint32 arrays; out_src_port,\n"
"out_dst_port, out_l4_offset: uint16; out_proto, out_reason: uint8 (numpy arrays or any\n"
"writable buffers). Dropped frames get their reason code and zeros elsewhere.\n"
"Returns how many frames parsed (reason 0).");

static PyObject *parse_batch(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o_buf, *o_off, *o_len, *o_sip, *o_dip, *o_sport, *o_dport, *o_proto, *o_hash,
        *o_reason, *o_l4;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "OOOnOOOOOOOO:parse_batch", &o_buf, &o_off, &o_len, &count,
                          &o_sip, &o_dip, &o_sport, &o_dport, &o_proto, &o_hash, &o_reason,
                          &o_l4))
        return NULL;
    if (count < 0)
        return PyErr_Format(PyExc_ValueError, "count: must be >= 0, got %zd", count);

    enum { BUF, OFF, LEN, SIP, DIP, SPORT, DPORT, PROTO, HASH, REASON, L4, NVIEWS };
    Py_buffer v[NVIEWS];
    int got = 0;
    PyObject *result = NULL;

    if (PyObject_GetBuffer(o_buf, &v[BUF], PyBUF_SIMPLE) < 0)
        return NULL;
    got = 1;
    struct { PyObject *obj; const char *name; Py_ssize_t size; int writable; } arrays[] = {
        {o_off, "offsets", 4, 0},     {o_len, "lengths", 4, 0},
        {o_sip, "out_src_ip", 4, 1},  {o_dip, "out_dst_ip", 4, 1},
        {o_sport, "out_src_port", 2, 1}, {o_dport, "out_dst_port", 2, 1},
        {o_proto, "out_proto", 1, 1}, {o_hash, "out_hash", 4, 1},
        {o_reason, "out_reason", 1, 1}, {o_l4, "out_l4_offset", 2, 1},
    };
    for (; got < NVIEWS; got++) {
        const int a = got - 1;
        if (get_int_array(arrays[a].obj, &v[got], arrays[a].name, arrays[a].size, count,
                          arrays[a].writable) < 0)
            goto done;
    }

    const uint8_t *buf = v[BUF].buf;
    const uint64_t buf_len = (uint64_t)v[BUF].len;
    const uint32_t *offsets = v[OFF].buf, *lengths = v[LEN].buf;
    uint32_t *sip = v[SIP].buf, *dip = v[DIP].buf, *hash = v[HASH].buf;
    uint16_t *sport = v[SPORT].buf, *dport = v[DPORT].buf, *l4 = v[L4].buf;
    uint8_t *proto = v[PROTO].buf, *reason = v[REASON].buf;
    Py_ssize_t ok = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if ((uint64_t)offsets[i] + lengths[i] > buf_len) {
            PyErr_Format(PyExc_ValueError, "frame %zd: offset %u + length %u is beyond the "
                         "buffer (%zd bytes)", i, offsets[i], lengths[i], v[BUF].len);
            goto done;
        }
        struct nf_parsed p;
        int r = nf_parse(buf + offsets[i], lengths[i], &p);
        sip[i] = p.src_ip;
        dip[i] = p.dst_ip;
        sport[i] = p.src_port;
        dport[i] = p.dst_port;
        proto[i] = p.proto;
        l4[i] = p.l4_offset;
        reason[i] = (uint8_t)r;
        if (r == NF_OK) {
            hash[i] = nf_flow_hash(&p);
            ok++;
        } else {
            hash[i] = 0;
        }
    }
    result = PyLong_FromSsize_t(ok);
done:
    for (int k = 0; k < got; k++)
        PyBuffer_Release(&v[k]);
    return result;
}

/* ---- flow_hash --------------------------------------------------------------------------- */

PyDoc_STRVAR(flow_hash_doc,
"flow_hash(src_ip, dst_ip, src_port, dst_port, proto) -> int\n\n"
"nf_flow_hash: must equal vnf.hashing.flow_hash(FiveTuple(...)).");

static PyObject *flow_hash(PyObject *Py_UNUSED(self), PyObject *args)
{
    unsigned int sip, dip, sport, dport, proto;
    if (!PyArg_ParseTuple(args, "IIIII:flow_hash", &sip, &dip, &sport, &dport, &proto))
        return NULL;
    struct nf_parsed p = {.src_ip = sip, .dst_ip = dip, .src_port = (uint16_t)sport,
                          .dst_port = (uint16_t)dport, .proto = (uint8_t)proto};
    return PyLong_FromUnsignedLong(nf_flow_hash(&p));
}

/* ---- rewrites ---------------------------------------------------------------------------- */

static int get_writable_frame(PyObject *obj, Py_buffer *view)
{
    return PyObject_GetBuffer(obj, view, PyBUF_WRITABLE);
}

/* Parse frame, and if it parsed, apply a NAT rewrite in place. Returns the reason code. */
static PyObject *nat(PyObject *args, const char *fmt, int dst)
{
    PyObject *o_frame;
    unsigned int new_ip, new_port;
    if (!PyArg_ParseTuple(args, fmt, &o_frame, &new_ip, &new_port))
        return NULL;
    if (new_port > 0xffff)
        return PyErr_Format(PyExc_ValueError, "new_port: %u is not a port", new_port);
    Py_buffer view;
    if (get_writable_frame(o_frame, &view) < 0)
        return NULL;
    struct nf_parsed p;
    uint32_t len = view.len > UINT32_MAX ? UINT32_MAX : (uint32_t)view.len;
    int reason = nf_parse(view.buf, len, &p);
    if (reason == NF_OK) {
        if (dst)
            nf_nat_dst(view.buf, &p, new_ip, (uint16_t)new_port);
        else
            nf_nat_src(view.buf, &p, new_ip, (uint16_t)new_port);
    }
    PyBuffer_Release(&view);
    return PyLong_FromLong(reason);
}

PyDoc_STRVAR(nat_dst_doc,
"nat_dst(frame, new_ip, new_port) -> reason\n\n"
"Parse a writable frame and, if it parsed (reason 0), rewrite its destination IP/port in place\n"
"with incremental checksum updates (nf_nat_dst). Otherwise the frame is left alone.");

static PyObject *nat_dst(PyObject *Py_UNUSED(self), PyObject *args)
{
    return nat(args, "OII:nat_dst", 1);
}

PyDoc_STRVAR(nat_src_doc,
"nat_src(frame, new_ip, new_port) -> reason\n\nAs nat_dst, for the source IP/port.");

static PyObject *nat_src(PyObject *Py_UNUSED(self), PyObject *args)
{
    return nat(args, "OII:nat_src", 0);
}

PyDoc_STRVAR(set_macs_doc,
"set_macs(frame, dst_mac, src_mac)\n\nWrite 6-byte destination and source MACs in place.");

static PyObject *set_macs(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o_frame;
    Py_buffer frame, dst, src;
    if (!PyArg_ParseTuple(args, "Oy*y*:set_macs", &o_frame, &dst, &src))
        return NULL;
    PyObject *result = NULL;
    if (dst.len != 6 || src.len != 6) {
        PyErr_SetString(PyExc_ValueError, "set_macs: MACs must be 6 bytes");
    } else if (get_writable_frame(o_frame, &frame) == 0) {
        if (frame.len < 12) {
            PyErr_SetString(PyExc_ValueError, "set_macs: frame shorter than 12 bytes");
        } else {
            nf_set_macs(frame.buf, dst.buf, src.buf);
            result = Py_NewRef(Py_None);
        }
        PyBuffer_Release(&frame);
    }
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    return result;
}

/* ---- module ------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"parse_one", parse_one, METH_O, parse_one_doc},
    {"parse_batch", parse_batch, METH_VARARGS, parse_batch_doc},
    {"flow_hash", flow_hash, METH_VARARGS, flow_hash_doc},
    {"nat_dst", nat_dst, METH_VARARGS, nat_dst_doc},
    {"nat_src", nat_src, METH_VARARGS, nat_src_doc},
    {"set_macs", set_macs, METH_VARARGS, set_macs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vnf._fastpath",
    "Batch parse, flow hash and rewrites in C (nf.h), mirroring vnf.packet / vnf.rewrite.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "REASON_COUNT", NF_REASON_COUNT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
