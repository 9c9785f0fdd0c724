/*
 * vnf._fastpath - Python face of nf.h: parse, hash and rewrite in C.
 *
 * parse_batch() is the one that matters for speed: it parses a whole burst (an AF_PACKET ring
 * block, a DPDK burst copied out) in one call, writing the 5-tuples, flow hashes and drop reasons
 * into caller-owned arrays (numpy arrays in practice), so the Python loop only does the flow-table
 * lookup. cache_lookup() is the other half of a vectorised burst: the VIP check and the flow
 * cache lookup (nf_for_vip, nf_cache_lookup) for the whole burst in one call, over the same
 * columns (strided: numpy record-array fields work) and the arrays of vnf.batch.BatchFlowCache;
 * CacheLookup is the same with its arguments checked and held once, for a loop that looks up
 * every burst in the same arrays (a burst then pays for its packets, not for its arguments).
 * The other functions exist mainly so tests can compare C with vnf/packet.py and
 * vnf/rewrite.py.
 *
 * Plain CPython C API and the buffer protocol: no numpy headers, any buffer works (bytes,
 * bytearray, mmap, numpy arrays).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>

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

/* ---- cache_lookup: the per-burst decision ------------------------------------------------ */

/* A 1-D buffer of count or more items, any stride (a numpy record-array column has the record
 * size as its stride): item i is at base + i * stride. */
struct column {
    Py_buffer view;
    char *base;
    Py_ssize_t stride, len;
    int owned;                /* 1: acquired by this call, released at its end */
};

/* pin(array) -> Pinned: a buffer export held until the Pinned object is freed.
 *
 * Asking a numpy array for its buffer costs ~0.1 us; a per-burst call that takes ten arrays
 * would spend a microsecond on that alone. Arrays that live as long as the loop (the flow cache,
 * the parse arrays of a DPDK burst) are pinned once and the pin is passed instead: the same idea
 * as registering buffers with a device once rather than per I/O. The exporter is kept alive
 * (and numpy will not resize it) while the pin exists. */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
} PinnedObject;

static void Pinned_dealloc(PinnedObject *self)
{
    if (self->view.obj)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Pinned_repr(PinnedObject *self)
{
    return PyUnicode_FromFormat("<Pinned %s, %zd bytes%s>", Py_TYPE(self->view.obj)->tp_name,
                                self->view.len, self->view.readonly ? ", read-only" : "");
}

static PyTypeObject PinnedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vnf._fastpath.Pinned",
    .tp_basicsize = sizeof(PinnedObject),
    .tp_dealloc = (destructor)Pinned_dealloc,
    .tp_repr = (reprfunc)Pinned_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A held buffer export (see pin()); pass it wherever cache_lookup takes an array.",
};

PyDoc_STRVAR(pin_doc,
"pin(array) -> Pinned\n\n"
"Hold array's buffer (format, strides; writable if it is) until the Pinned object is freed,\n"
"so cache_lookup, called per burst, need not ask for it again. Only for arrays that outlive\n"
"the loop and are never reallocated.");

static PyObject *pin(PyObject *Py_UNUSED(self), PyObject *arg)
{
    PinnedObject *p = PyObject_New(PinnedObject, &PinnedType);
    if (!p)
        return NULL;
    p->view.obj = NULL;
    if (PyObject_GetBuffer(arg, &p->view, PyBUF_FORMAT | PyBUF_STRIDES | PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        if (PyObject_GetBuffer(arg, &p->view, PyBUF_FORMAT | PyBUF_STRIDES) < 0) {
            p->view.obj = NULL;
            Py_DECREF(p);
            return NULL;
        }
    }
    return (PyObject *)p;
}

/* kinds: the struct format letters accepted (the size is checked separately). */
static int get_column(PyObject *obj, struct column *c, const char *name, Py_ssize_t itemsize,
                      const char *kinds, Py_ssize_t count, int writable)
{
    if (Py_IS_TYPE(obj, &PinnedType)) {           /* held already: borrow its view */
        c->view = ((PinnedObject *)obj)->view;
        c->owned = 0;
        if (writable && c->view.readonly) {
            PyErr_Format(PyExc_TypeError, "%s: the pinned buffer is read-only", name);
            return -1;
        }
    } else {
        int flags = PyBUF_FORMAT | PyBUF_STRIDES | (writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(obj, &c->view, flags) < 0)
            return -1;
        c->owned = 1;
    }
    const char *fmt = c->view.format ? c->view.format : "B";
    size_t flen = strlen(fmt);
    char kind = flen ? fmt[flen - 1] : '?';
    /* "I", "=I", "<I" (little-endian host: native); not ">I" or "!I", nor a struct "T{...}" */
    int byte_order_ok = flen == 1 || (flen == 2 && strchr("@=<", fmt[0]) != NULL);
    if (c->view.itemsize != itemsize || !byte_order_ok || !strchr(kinds, kind) ||
        c->view.ndim != 1) {
        PyErr_Format(PyExc_TypeError, "%s: need a 1-D array of '%s' items of %zd bytes, got "
                     "format '%s', %zd-byte items, %d dimension(s)", name, kinds, itemsize, fmt,
                     c->view.itemsize, c->view.ndim);
        if (c->owned)
            PyBuffer_Release(&c->view);
        return -1;
    }
    c->len = c->view.shape ? c->view.shape[0] : c->view.len / itemsize;
    c->stride = c->view.strides ? c->view.strides[0] : itemsize;
    c->base = c->view.buf;
    if (c->len < count) {
        PyErr_Format(PyExc_ValueError, "%s: has %zd items, need at least %zd", name, c->len,
                     count);
        if (c->owned)
            PyBuffer_Release(&c->view);
        return -1;
    }
    return 0;
}

#define COL(c, type, i) (*(type *)((c).base + (i) * (c).stride))

PyDoc_STRVAR(cache_lookup_doc,
"cache_lookup(n, now, columns, vip, cache, choice) -> (parsed, valid, hits)\n\n"
"The hit path of LoadBalancer.backends_for_batch for packets 0..n-1, in one call:\n"
"nf_for_vip (reason == 0, dst_ip == vip, dst_port == port, bit proto of proto_mask set) and\n"
"nf_cache_lookup (slot = nf_cache_slot(hash): Fibonacci hashing, see nf.h; a hit when the\n"
"slot's hash == hash and its backend b is >= 0 and alive[b]; a hit sets its seen = now).\n"
"Writes choice[i] = b for a hit, -1 for a packet not to balance, -2 for a miss.\n"
"columns = (hash, reason, dst_ip, dst_port, proto): the packets, 1-D with any stride (numpy\n"
"record-array fields work): hash, dst_ip uint32; dst_port uint16; reason, proto uint8.\n"
"vip = (ip, port, proto_mask). cache = (slots, alive): BatchFlowCache.slot_bytes, the\n"
"slots (vnf.batch.SLOT, struct nf_flow_slot) as writable uint8, a power-of-two count of\n"
"them, starting on a multiple of 32 bytes; alive: bool/uint8 per backend number.\n"
"choice: int32, writable, >= n items.\n"
"Any array may be passed as a Pinned (pin()) to skip asking for its buffer on every call.\n"
"Returns how many packets parsed (reason 0), were to balance, and hit.");

/* The arguments of a lookup, checked and held: the packet columns, the VIP, the cache arrays and
 * the choice output (cache_lookup takes them per call; a CacheLookup holds them). */
enum { HASH, REASON, DST_IP, DST_PORT, PROTO, SLOTS, ALIVE, CHOICE, NCOLS };

struct lookup_args {
    struct column c[NCOLS];
    int got;                  /* columns acquired (released by lookup_release) */
    struct nf_vip vip;
    struct nf_cache cache;
    Py_ssize_t packets;       /* the most packets every packet column (and choice) holds */
};

static void lookup_release(struct lookup_args *a)
{
    for (int k = 0; k < a->got; k++)
        if (a->c[k].owned)
            PyBuffer_Release(&a->c[k].view);
    a->got = 0;
}

/* Check and acquire the arguments (see cache_lookup_doc) for bursts of up to n packets. */
static int lookup_bind(struct lookup_args *a, Py_ssize_t n, PyObject *o_cols, PyObject *o_vip,
                       PyObject *o_cache, PyObject *o_choice)
{
    a->got = 0;
    if (!PyTuple_Check(o_cols) || PyTuple_GET_SIZE(o_cols) != 5 || !PyTuple_Check(o_vip) ||
        PyTuple_GET_SIZE(o_vip) != 3 || !PyTuple_Check(o_cache) || PyTuple_GET_SIZE(o_cache) != 2) {
        PyErr_SetString(PyExc_TypeError, "cache_lookup: columns, vip, cache must be tuples of 5, "
                        "3 and 2 items");
        return -1;
    }
    unsigned long vip_ip = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(o_vip, 0));
    long vip_port = PyLong_AsLong(PyTuple_GET_ITEM(o_vip, 1));
    unsigned long long proto_mask = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(o_vip, 2));
    if (PyErr_Occurred())
        return -1;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "n: must be >= 0, got %zd", n);
        return -1;
    }
    if (vip_ip > UINT32_MAX || vip_port < 0 || vip_port > 0xffff) {
        PyErr_Format(PyExc_ValueError, "vip/port out of range: %lu, %ld", vip_ip, vip_port);
        return -1;
    }
    static const struct { const char *name, *kinds; Py_ssize_t size; int writable, packet; }
    spec[NCOLS] = {
        {"hash", "bBhHiIlLqQ", 4, 0, 1},          {"reason", "bB", 1, 0, 1},
        {"dst_ip", "bBhHiIlLqQ", 4, 0, 1},        {"dst_port", "bBhHiIlLqQ", 2, 0, 1},
        {"proto", "bB", 1, 0, 1},                 {"slots", "B", 1, 1, 0},
        {"alive", "?bB", 1, 0, 0},                {"choice", "bBhHiIlLqQ", 4, 1, 1},
    };
    PyObject *objs[NCOLS];
    for (int k = 0; k < 5; k++)
        objs[HASH + k] = PyTuple_GET_ITEM(o_cols, k);
    for (int k = 0; k < 2; k++)
        objs[SLOTS + k] = PyTuple_GET_ITEM(o_cache, k);
    objs[CHOICE] = o_choice;
    struct column *c = a->c;
    a->packets = PY_SSIZE_T_MAX;
    for (; a->got < NCOLS; a->got++) {
        int k = a->got;
        if (get_column(objs[k], &c[k], spec[k].name, spec[k].size, spec[k].kinds,
                       spec[k].packet ? n : 0, spec[k].writable) < 0) {
            lookup_release(a);
            return -1;
        }
        if (spec[k].packet && c[k].len < a->packets)
            a->packets = c[k].len;
    }
    Py_ssize_t slots = c[SLOTS].len / (Py_ssize_t)sizeof(struct nf_flow_slot);
    if (c[SLOTS].stride != 1 || c[SLOTS].len % (Py_ssize_t)sizeof(struct nf_flow_slot) ||
        slots < 1 || (slots & (slots - 1)) || slots > (Py_ssize_t)1 << 32 ||
        (uintptr_t)c[SLOTS].base % NF_CACHE_ALIGN || c[ALIVE].stride != 1 ||
        c[ALIVE].len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "slots: need the contiguous bytes of a power-of-two "
                        "count of slots, starting on a multiple of 32 bytes (and a contiguous "
                        "alive)");
        lookup_release(a);
        return -1;
    }
    a->vip = (struct nf_vip){.ip = (uint32_t)vip_ip, .port = (uint16_t)vip_port,
                             .proto_mask = proto_mask};
    a->cache = (struct nf_cache){
        .slots = (struct nf_flow_slot *)c[SLOTS].base, .mask = (uint32_t)(slots - 1),
        .alive = (const uint8_t *)c[ALIVE].base, .nalive = (uint32_t)c[ALIVE].len,
    };
    return 0;
}

/* The loop of a lookup over packets 0..n-1: choice per packet, counts[] = parsed, valid, hits.
 * Everything it reads is in locals: extensions build with -fno-strict-aliasing, so each store
 * to choice or seen would otherwise make the compiler reload every column's base and stride.
 * step[] = each column's stride; always inlined, so a call with constant strides (contiguous
 * columns, the ParseArrays case) compiles to a loop of its own with plain indexing. */
static inline __attribute__((always_inline)) void
lookup_loop(const struct lookup_args *a, Py_ssize_t n, double now, Py_ssize_t hash_step,
            Py_ssize_t reason_step, Py_ssize_t ip_step, Py_ssize_t port_step,
            Py_ssize_t proto_step, Py_ssize_t choice_step, Py_ssize_t counts[3])
{
    const char *hash_at = a->c[HASH].base, *reason_at = a->c[REASON].base;
    const char *ip_at = a->c[DST_IP].base, *port_at = a->c[DST_PORT].base;
    const char *proto_at = a->c[PROTO].base;
    char *choice_at = a->c[CHOICE].base;
#define ITEM(column, type, i) (*(type *)(column##_at + (i) * column##_step))
    const struct nf_cache cache = a->cache;
    const struct nf_vip vip = a->vip;
    Py_ssize_t parsed = 0, valid = 0, hits = 0;
    enum { AHEAD = 8 };       /* packets whose slots are requested ahead (nf_cache_prefetch) */
    for (Py_ssize_t i = 0; i < n && i < AHEAD; i++)
        nf_cache_prefetch(&cache, ITEM(hash, const uint32_t, i));
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + AHEAD < n)
            nf_cache_prefetch(&cache, ITEM(hash, const uint32_t, i + AHEAD));
        uint8_t reason = ITEM(reason, const uint8_t, i);
        int32_t b = NF_CHOICE_DROP;
        parsed += reason == NF_OK;
        if (nf_for_vip(&vip, reason, ITEM(ip, const uint32_t, i), ITEM(port, const uint16_t, i),
                       ITEM(proto, const uint8_t, i))) {
            valid++;
            b = nf_cache_lookup(&cache, ITEM(hash, const uint32_t, i), now);
            hits += b >= 0;
        }
        ITEM(choice, int32_t, i) = b;
    }
#undef ITEM
    counts[0] = parsed;
    counts[1] = valid;
    counts[2] = hits;
}

/* The lookup itself, packets 0..n-1 (n <= a->packets): returns (parsed, valid, hits). */
static PyObject *lookup_run(const struct lookup_args *a, Py_ssize_t n, double now)
{
    const struct column *c = a->c;
    Py_ssize_t counts[3];
    if (c[HASH].stride == 4 && c[REASON].stride == 1 && c[DST_IP].stride == 4 &&
        c[DST_PORT].stride == 2 && c[PROTO].stride == 1 && c[CHOICE].stride == 4)
        lookup_loop(a, n, now, 4, 1, 4, 2, 1, 4, counts);         /* contiguous columns */
    else
        lookup_loop(a, n, now, c[HASH].stride, c[REASON].stride, c[DST_IP].stride,
                    c[DST_PORT].stride, c[PROTO].stride, c[CHOICE].stride, counts);
    PyObject *result = PyTuple_New(3);      /* not Py_BuildValue: it parses its format per call */
    if (!result)
        return NULL;
    for (int k = 0; k < 3; k++) {
        PyObject *v = PyLong_FromSsize_t(counts[k]);
        if (!v) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, k, v);
    }
    return result;
}

static PyObject *cache_lookup(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6)
        return PyErr_Format(PyExc_TypeError, "cache_lookup() takes 6 arguments (%zd given)",
                            nargs);
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    double now = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred())
        return NULL;
    struct lookup_args a;
    if (lookup_bind(&a, n, args[2], args[3], args[4], args[5]) < 0)
        return NULL;
    PyObject *result = lookup_run(&a, n, now);
    lookup_release(&a);
    return result;
}

/* CacheLookup: cache_lookup with its arguments bound once. A vector poll loop looks up every
 * burst in the same arrays (the ParseArrays it parses into, the flow cache, one choice array):
 * checking ten buffers per burst would cost more than looking up 32 packets, so they are checked
 * and held here once, and each burst passes only n and the time. */
typedef struct {
    PyObject_HEAD
    struct lookup_args a;
    PyObject *held;           /* the bound objects (a Pinned's view is borrowed: keep it alive) */
} CacheLookupObject;

static void CacheLookup_dealloc(CacheLookupObject *self)
{
    lookup_release(&self->a);
    Py_XDECREF(self->held);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *CacheLookup_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"columns", "vip", "cache", "choice", NULL};
    PyObject *cols, *vip, *cache, *choice;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO", kwl, &cols, &vip, &cache, &choice))
        return NULL;
    CacheLookupObject *self = (CacheLookupObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->a.got = 0;
    self->held = PyTuple_Pack(4, cols, vip, cache, choice);
    if (!self->held || lookup_bind(&self->a, 0, cols, vip, cache, choice) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *CacheLookup_lookup(CacheLookupObject *self, PyObject *const *args,
                                    Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "lookup(n, now)");
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    double now = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (n < 0 || n > self->a.packets)
        return PyErr_Format(PyExc_ValueError, "n: 0..%zd (the bound columns), got %zd",
                            self->a.packets, n);
    return lookup_run(&self->a, n, now);
}

static PyMethodDef CacheLookup_methods[] = {
    {"lookup", (PyCFunction)(void (*)(void))CacheLookup_lookup, METH_FASTCALL,
     "lookup(n, now) -> (parsed, valid, hits): cache_lookup over packets 0..n-1"},
    {NULL},
};

static PyTypeObject CacheLookupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vnf._fastpath.CacheLookup",
    .tp_basicsize = sizeof(CacheLookupObject),
    .tp_dealloc = (destructor)CacheLookup_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = CacheLookup_new,
    .tp_methods = CacheLookup_methods,
    .tp_doc = "CacheLookup(columns, vip, cache, choice): cache_lookup's arguments checked and "
              "held once; .lookup(n, now) per burst. The arrays must outlive it unchanged in "
              "size (it holds their buffers, so numpy will not resize them).",
};

/* ---- module ------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"parse_one", parse_one, METH_O, parse_one_doc},
    {"parse_batch", parse_batch, METH_VARARGS, parse_batch_doc},
    {"flow_hash", flow_hash, METH_VARARGS, flow_hash_doc},
    {"nat_dst", nat_dst, METH_VARARGS, nat_dst_doc},
    {"nat_src", nat_src, METH_VARARGS, nat_src_doc},
    {"set_macs", set_macs, METH_VARARGS, set_macs_doc},
    {"cache_lookup", (PyCFunction)(void (*)(void))cache_lookup, METH_FASTCALL,
     cache_lookup_doc},
    {"pin", pin, METH_O, pin_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vnf._fastpath",
    "Batch parse, flow hash and rewrites in C (nf.h), mirroring vnf.packet / vnf.rewrite.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&PinnedType) < 0 || PyType_Ready(&CacheLookupType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "REASON_COUNT", NF_REASON_COUNT) < 0 ||
              PyModule_AddIntConstant(m, "CHOICE_DROP", NF_CHOICE_DROP) < 0 ||
              PyModule_AddIntConstant(m, "CHOICE_MISS", NF_CHOICE_MISS) < 0 ||
              /* the slot's layout, which vnf.batch.SLOT must match (tested) */
              PyModule_AddIntConstant(m, "CACHE_SLOT_SIZE", sizeof(struct nf_flow_slot)) < 0 ||
              PyModule_AddIntConstant(m, "CACHE_SLOT_HASH",
                                      offsetof(struct nf_flow_slot, hash)) < 0 ||
              PyModule_AddIntConstant(m, "CACHE_SLOT_BACKEND",
                                      offsetof(struct nf_flow_slot, backend)) < 0 ||
              PyModule_AddIntConstant(m, "CACHE_SLOT_SEEN",
                                      offsetof(struct nf_flow_slot, seen)) < 0 ||
              PyModule_AddIntConstant(m, "CACHE_ALIGN", NF_CACHE_ALIGN) < 0 ||
              PyModule_AddType(m, &PinnedType) < 0 ||
              PyModule_AddType(m, &CacheLookupType) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
