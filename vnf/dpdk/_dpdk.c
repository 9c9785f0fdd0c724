/* vnf.dpdk._dpdk: a small CPython binding to DPDK for way 3 of vnflab.
 *
 * Why C: rte_eth_rx_burst()/rte_eth_tx_burst() are static inline functions in DPDK's headers,
 * so they can only be reached from code compiled against those headers.
 *
 * Objects
 *   Mempool  rte_pktmbuf_pool_create() result (lives until EAL cleanup)
 *   Burst    up to `capacity` mbuf pointers; burst[i] is a writable memoryview over mbuf i's
 *            data (valid until the burst is transmitted, freed, compacted or refilled)
 *   Ring     rte_ring of mbuf pointers (pipeline stages on different threads)
 * Ownership rule: a Burst owns its mbufs. tx/enqueue hand them to DPDK; the ones DPDK does not
 * take are FREED (counted as drops), so a burst is always empty after tx/enqueue.
 * Busy-cycle accounting: rx_burst() reads the TSC before polling; when it returns n > 0 the
 * burst remembers that start. The first tx/enqueue/free of that burst adds (now - start) cycles
 * and n packets to the counters of the queue (or ring) it came from.
 */
#define PY_SSIZE_T_CLEAN
#define ALLOW_EXPERIMENTAL_API 1
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_dev.h>
#include <rte_prefetch.h>

#include "nf.h"      /* vnf/csrc/nf.h: parse, flow hash, rewrites (shared with the other ways) */

#define MAX_Q 16

static PyObject *DpdkError;
static int eal_state;           /* 0 never, 1 up, 2 cleaned up */

struct acct { uint64_t cycles, packets, bursts; };
static struct acct q_acct[RTE_MAX_ETHPORTS][MAX_Q];
static struct acct ring_acct;

static PyObject *dpdk_err(int err, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (err < 0)
        err = -err;
    PyObject *msg = PyUnicode_FromFormat("%s: %s", buf, rte_strerror(err));
    if (!msg)
        return NULL;
    PyObject *args = Py_BuildValue("(iN)", err, msg);
    if (args) {
        PyErr_SetObject(DpdkError, args);
        Py_DECREF(args);
    }
    return NULL;
}

static int need_eal(void)
{
    if (eal_state == 1)
        return 0;
    PyErr_SetString(DpdkError, eal_state == 0 ? "EAL not initialised (call vnf.dpdk.init())"
                                              : "EAL already cleaned up");
    return -1;
}

static int check_port(long port)
{
    if (need_eal())
        return -1;
    if (port < 0 || port >= RTE_MAX_ETHPORTS || !rte_eth_dev_is_valid_port((uint16_t)port)) {
        PyErr_Format(PyExc_ValueError, "no such DPDK port: %ld", port);
        return -1;
    }
    return 0;
}

/* The methods that take just a port id: parse it and check it names a started EAL's port. */
static int port_arg(PyObject *args, long *port)
{
    if (!PyArg_ParseTuple(args, "l", port))
        return -1;
    return check_port(*port);
}

static inline void acct_add(struct acct *a, uint64_t cycles, uint64_t pkts)
{
    __atomic_fetch_add(&a->cycles, cycles, __ATOMIC_RELAXED);
    __atomic_fetch_add(&a->packets, pkts, __ATOMIC_RELAXED);
    __atomic_fetch_add(&a->bursts, 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ Mempool */
typedef struct {
    PyObject_HEAD
    struct rte_mempool *mp;
} MempoolObject;

static PyTypeObject MempoolType;

static PyObject *Mempool_avail(MempoolObject *self, PyObject *unused)
{
    if (need_eal()) return NULL;
    return PyLong_FromUnsignedLong(rte_mempool_avail_count(self->mp));
}
static PyObject *Mempool_in_use(MempoolObject *self, PyObject *unused)
{
    if (need_eal()) return NULL;
    return PyLong_FromUnsignedLong(rte_mempool_in_use_count(self->mp));
}
static PyObject *Mempool_get_name(MempoolObject *self, void *c)
{
    return PyUnicode_FromString(self->mp->name);
}
static PyObject *Mempool_get_size(MempoolObject *self, void *c)
{
    return PyLong_FromUnsignedLong(self->mp->size);
}
static void Mempool_dealloc(MempoolObject *self)
{
    /* Never freed before EAL cleanup: memoryviews may still point into the pool. */
    Py_TYPE(self)->tp_free((PyObject *)self);
}
static PyMethodDef Mempool_methods[] = {
    {"avail", (PyCFunction)Mempool_avail, METH_NOARGS, "free mbufs in the pool"},
    {"in_use", (PyCFunction)Mempool_in_use, METH_NOARGS, "mbufs taken from the pool"},
    {NULL}};
static PyGetSetDef Mempool_getset[] = {
    {"name", (getter)Mempool_get_name, NULL, "pool name", NULL},
    {"size", (getter)Mempool_get_size, NULL, "number of mbufs", NULL},
    {NULL}};
static PyTypeObject MempoolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vnf.dpdk._dpdk.Mempool",
    .tp_basicsize = sizeof(MempoolObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "rte_pktmbuf pool (create with pool_create)",
    .tp_dealloc = (destructor)Mempool_dealloc,
    .tp_methods = Mempool_methods,
    .tp_getset = Mempool_getset,
};

/* ------------------------------------------------------------------ Burst */
/* read-only integer index array (any integer dtype) */
typedef struct { Py_buffer v; int is_signed; } IdxBuf;

/* What the burst knows of its packets since it was filled: nothing; each one's parse result
 * (reason[], what forward() writes: its slow path and set_macs/keep need no more); or that and
 * the parsed headers too (parsed[], from parse(): what a NAT rewrite needs). */
enum { PARSED_NONE, PARSED_REASONS, PARSED_HEADERS };

typedef struct {
    PyObject_HEAD
    uint16_t n, cap;
    int parsed_valid;           /* PARSED_NONE, PARSED_REASONS or PARSED_HEADERS */
    uint64_t t0;                /* TSC at the poll that filled it; 0 = not timed */
    uint64_t t_pkts;            /* packets the timer covers */
    struct acct *acct;
    struct rte_mbuf **pkts;
    struct nf_parsed *parsed;
    uint8_t *reason;
    PyObject *parse_into;       /* the ParseArrays whose block parse_view holds (or NULL) */
    Py_buffer parse_view;
    PyObject *index_of;         /* the index array set_macs had last, held in index_view */
    IdxBuf index_view;
} BurstObject;

static PyTypeObject BurstType;

static BurstObject *burst_new(Py_ssize_t cap)
{
    if (cap < 1 || cap > 4096) {
        PyErr_SetString(PyExc_ValueError, "burst capacity must be 1..4096");
        return NULL;
    }
    BurstObject *b = PyObject_New(BurstObject, &BurstType);
    if (!b)
        return NULL;
    b->n = 0;
    b->cap = (uint16_t)cap;
    b->parsed_valid = PARSED_NONE;
    b->t0 = 0;
    b->t_pkts = 0;
    b->acct = NULL;
    b->parse_into = NULL;
    b->index_of = NULL;
    b->pkts = PyMem_Calloc(cap, sizeof(*b->pkts));
    b->parsed = PyMem_Calloc(cap, sizeof(*b->parsed));
    b->reason = PyMem_Calloc(cap, 1);
    if (!b->pkts || !b->parsed || !b->reason) {
        Py_DECREF(b);
        PyErr_NoMemory();
        return NULL;
    }
    return b;
}

static inline void burst_stop_timer(BurstObject *b, uint64_t now)
{
    if (b->t0 && b->acct)
        acct_add(b->acct, now - b->t0, b->t_pkts);
    b->t0 = 0;
}

static void burst_release(BurstObject *b)
{
    if (b->n && eal_state == 1)
        rte_pktmbuf_free_bulk(b->pkts, b->n);
    b->n = 0;
    b->parsed_valid = PARSED_NONE;
}

static void burst_unpin_parse(BurstObject *b)
{
    if (b->parse_into) {
        PyBuffer_Release(&b->parse_view);
        Py_CLEAR(b->parse_into);
    }
}

static void burst_unpin_index(BurstObject *b)
{
    if (b->index_of) {
        PyBuffer_Release(&b->index_view.v);
        Py_CLEAR(b->index_of);
    }
}

static void Burst_dealloc(BurstObject *self)
{
    burst_unpin_parse(self);
    burst_unpin_index(self);
    if (self->pkts) {
        if (eal_state == 1)
            burst_stop_timer(self, rte_rdtsc());
        burst_release(self);
    }
    PyMem_Free(self->pkts);
    PyMem_Free(self->parsed);
    PyMem_Free(self->reason);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Burst_tp_new(PyTypeObject *t, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"capacity", NULL};
    Py_ssize_t cap = 32;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|n", kwl, &cap))
        return NULL;
    return (PyObject *)burst_new(cap);
}

static Py_ssize_t Burst_len(BurstObject *self) { return self->n; }

static PyObject *Burst_item(BurstObject *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "burst index out of range");
        return NULL;
    }
    struct rte_mbuf *m = self->pkts[i];
    return PyMemoryView_FromMemory(rte_pktmbuf_mtod(m, char *), rte_pktmbuf_data_len(m),
                                   PyBUF_WRITE);
}

static PyObject *Burst_data(BurstObject *self, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    return Burst_item(self, i);
}

static PyObject *Burst_frame(BurstObject *self, PyObject *arg)
{
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "burst index out of range");
        return NULL;
    }
    struct rte_mbuf *m = self->pkts[i];
    return PyBytes_FromStringAndSize(rte_pktmbuf_mtod(m, char *), rte_pktmbuf_data_len(m));
}

static PyObject *Burst_free(BurstObject *self, PyObject *unused)
{
    if (self->n && need_eal())
        return NULL;
    if (eal_state == 1)
        burst_stop_timer(self, rte_rdtsc());
    burst_release(self);
    Py_RETURN_NONE;
}

/* --- buffer helpers for the batch operations */
static int get_out(PyObject *arrays, const char *name, Py_buffer *v, Py_ssize_t itemsize,
                   Py_ssize_t n, int required)
{
    PyObject *o = PyDict_Check(arrays) ? PyDict_GetItemString(arrays, name)
                                       : PyObject_GetAttrString(arrays, name);
    if (PyDict_Check(arrays))
        Py_XINCREF(o);
    if (!o) {
        PyErr_Clear();
        if (required) {
            PyErr_Format(PyExc_KeyError, "parse: missing array '%s'", name);
            return -1;
        }
        v->obj = NULL;
        v->buf = NULL;
        return 0;
    }
    if (o == Py_None) {
        Py_DECREF(o);
        v->obj = NULL;
        v->buf = NULL;
        return 0;
    }
    int r = PyObject_GetBuffer(o, v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT);
    Py_DECREF(o);
    if (r < 0)
        return -1;
    if (v->itemsize != itemsize || v->len / itemsize < n) {
        PyErr_Format(PyExc_ValueError, "array '%s' needs itemsize %zd and >= %zd items "
                     "(has itemsize %zd, %zd items)", name, itemsize, n, v->itemsize,
                     v->len / (v->itemsize ? v->itemsize : 1));
        PyBuffer_Release(v);
        v->obj = NULL;
        return -1;
    }
    return 0;
}

static void rel(Py_buffer *v)
{
    if (v->obj)
        PyBuffer_Release(v);
    v->obj = NULL;
}

/* parse(arrays) -> n. arrays: object or dict with numpy arrays src_ip (u32), dst_ip (u32),
 * src_port (u16), dst_port (u16), proto (u8), hash (u32), reason (u8), l4_offset (u16);
 * optional l3_offset (u16), vlan (i32). For a frame that fails, reason != 0, hash is 0 and
 * the other fields hold whatever nf_parse() filled in before it stopped. */
/* Fast path for ParseArrays: one contiguous block, fields of capacity c each, in the order
 * src_ip dst_ip hash vlan (4 bytes) | src_port dst_port l3_offset l4_offset (2) | proto reason
 * (1): one buffer to acquire instead of ten. */
/* The columns of a ParseArrays block (capacity c) as pointers. */
struct block_cols {
    uint32_t *src, *dst, *hs;
    int32_t *vl;
    uint16_t *sp, *dp, *l3, *l4;
    uint8_t *pr, *rs;
};

static inline struct block_cols block_cols(uint8_t *base, Py_ssize_t c)
{
    struct block_cols b;
    b.src = (uint32_t *)base; b.dst = b.src + c; b.hs = b.dst + c;
    b.vl = (int32_t *)(b.hs + c);
    b.sp = (uint16_t *)(base + 16 * c); b.dp = b.sp + c; b.l3 = b.dp + c; b.l4 = b.l3 + c;
    b.pr = base + 24 * c; b.rs = b.pr + c;
    return b;
}

/* Parse packet i of the burst (nf_parse + nf_flow_hash) into slot i of the block's columns. */
static inline int parse_one_into(BurstObject *self, const struct block_cols *b, Py_ssize_t i)
{
    struct rte_mbuf *m = self->pkts[i];
    struct nf_parsed *p = &self->parsed[i];
    int r = nf_parse(rte_pktmbuf_mtod(m, const uint8_t *), rte_pktmbuf_data_len(m), p);
    self->reason[i] = (uint8_t)r;
    b->src[i] = p->src_ip;
    b->dst[i] = p->dst_ip;
    b->hs[i] = r == NF_OK ? nf_flow_hash(p) : 0;
    b->vl[i] = p->vlan;
    b->sp[i] = p->src_port;
    b->dp[i] = p->dst_port;
    b->l3[i] = p->l3_offset;
    b->l4[i] = p->l4_offset;
    b->pr[i] = p->proto;
    b->rs[i] = (uint8_t)r;
    return r;
}

/* Frames written by the other side of a virtio ring (another core) are cache misses on first
 * touch: request packet i + PARSE_AHEAD while packet i is parsed, so the misses overlap with the
 * work (as the fused kernel, fk_forward, does). */
enum { PARSE_AHEAD = 4 };

static void parse_into_block(BurstObject *self, uint8_t *base, Py_ssize_t c)
{
    struct block_cols b = block_cols(base, c);
    Py_ssize_t n = self->n;
    for (Py_ssize_t i = 0; i < n && i < PARSE_AHEAD; i++)
        rte_prefetch0(rte_pktmbuf_mtod(self->pkts[i], void *));
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PARSE_AHEAD < n)
            rte_prefetch0(rte_pktmbuf_mtod(self->pkts[i + PARSE_AHEAD], void *));
        parse_one_into(self, &b, i);
    }
    self->parsed_valid = PARSED_HEADERS;
}

/* The block of a ParseArrays (`arrays._block`), held by the burst from one parse() to the next:
 * a poll loop parses every burst into the same ParseArrays, and asking numpy for a buffer costs
 * about as much as parsing a few packets. A ParseArrays' block is made once and never replaced
 * (vnf.dpdk.ParseArrays), so while `arrays` is the same object its held block is the one. */
static int pin_parse_block(BurstObject *self, PyObject *arrays)
{
    static PyObject *block_name;
    if (!block_name && !(block_name = PyUnicode_InternFromString("_block")))
        return -1;
    PyObject *blk = PyObject_GetAttr(arrays, block_name);
    if (!blk)
        return -1;
    Py_buffer v;
    int r = PyObject_GetBuffer(blk, &v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS);
    Py_DECREF(blk);
    if (r < 0)
        return -1;
    if (v.len % 26) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_ValueError, "ParseArrays block: not 26 bytes per packet");
        return -1;
    }
    burst_unpin_parse(self);
    Py_INCREF(arrays);
    self->parse_into = arrays;
    self->parse_view = v;
    return 0;
}

static PyObject *parse_block(BurstObject *self, PyObject *arrays)
{
    if (arrays != self->parse_into && pin_parse_block(self, arrays) < 0)
        return NULL;
    Py_ssize_t c = self->parse_view.len / 26, n = self->n;
    if (c < n)
        return PyErr_Format(PyExc_ValueError, "ParseArrays for %zd packets, burst has %zd", c, n);
    parse_into_block(self, self->parse_view.buf, c);
    return PyLong_FromSsize_t(n);
}

static PyObject *Burst_parse(BurstObject *self, PyObject *arrays)
{
    if (arrays == self->parse_into)
        return parse_block(self, arrays);
    if (!PyDict_Check(arrays)) {
        PyObject *r = parse_block(self, arrays);
        if (r || !PyErr_ExceptionMatches(PyExc_AttributeError))
            return r;
        PyErr_Clear();          /* no _block: an object of separate arrays */
    }
    enum { SRC, DST, SP, DP, PR, HS, RS, L4, L3, VL, NB };
    static const char *names[NB] = {"src_ip", "dst_ip", "src_port", "dst_port", "proto",
                                    "hash", "reason", "l4_offset", "l3_offset", "vlan"};
    static const Py_ssize_t sizes[NB] = {4, 4, 2, 2, 1, 4, 1, 2, 2, 4};
    Py_buffer v[NB];
    memset(v, 0, sizeof v);
    Py_ssize_t n = self->n;
    for (int k = 0; k < NB; k++)
        if (get_out(arrays, names[k], &v[k], sizes[k], n, k < L3) < 0) {
            for (int j = 0; j < k; j++)
                rel(&v[j]);
            return NULL;
        }
    uint32_t *src = v[SRC].buf, *dst = v[DST].buf, *hs = v[HS].buf;
    uint16_t *sp = v[SP].buf, *dp = v[DP].buf, *l4 = v[L4].buf, *l3 = v[L3].buf;
    uint8_t *pr = v[PR].buf, *rs = v[RS].buf;
    int32_t *vl = v[VL].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        struct rte_mbuf *m = self->pkts[i];
        struct nf_parsed *p = &self->parsed[i];
        int r = nf_parse(rte_pktmbuf_mtod(m, const uint8_t *), rte_pktmbuf_data_len(m), p);
        self->reason[i] = (uint8_t)r;
        src[i] = p->src_ip;
        dst[i] = p->dst_ip;
        sp[i] = p->src_port;
        dp[i] = p->dst_port;
        pr[i] = p->proto;
        hs[i] = r == NF_OK ? nf_flow_hash(p) : 0;
        rs[i] = (uint8_t)r;
        l4[i] = p->l4_offset;
        if (l3) l3[i] = p->l3_offset;
        if (vl) vl[i] = p->vlan;
    }
    self->parsed_valid = PARSED_HEADERS;
    for (int k = 0; k < NB; k++)
        rel(&v[k]);
    return PyLong_FromSsize_t(n);
}


static int get_index(PyObject *o, IdxBuf *ib, Py_ssize_t n, const char *what)
{
    if (PyObject_GetBuffer(o, &ib->v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = ib->v.format ? ib->v.format : "B";
    char c = f[strlen(f) - 1];
    if (!strchr("bBhHiIlLqQ?", c) || ib->v.len / ib->v.itemsize < n) {
        PyErr_Format(PyExc_ValueError, "%s must be an integer array with >= %zd items", what, n);
        PyBuffer_Release(&ib->v);
        return -1;
    }
    ib->is_signed = c >= 'a' && c <= 'z' && c != '?';
    return 0;
}

/* Item i of an index buffer of `itemsize`-byte items (signed or not). Inlined with constant
 * arguments, the switch disappears: see set_macs_loop. */
static inline int64_t idx_read(const void *buf, Py_ssize_t i, Py_ssize_t itemsize, int is_signed)
{
    const char *p = (const char *)buf + i * itemsize;
    switch (itemsize) {
    case 1: return is_signed ? (int64_t)*(const int8_t *)p : (int64_t)*(const uint8_t *)p;
    case 2: return is_signed ? (int64_t)*(const int16_t *)p : (int64_t)*(const uint16_t *)p;
    case 4: return is_signed ? (int64_t)*(const int32_t *)p : (int64_t)*(const uint32_t *)p;
    default: return *(const int64_t *)p;
    }
}

static inline int64_t idx_at(const IdxBuf *ib, Py_ssize_t i)
{
    return idx_read(ib->v.buf, i, ib->v.itemsize, ib->is_signed);
}

/* set_macs' loop: returns the packets rewritten, or -1 (IndexError set) at an index beyond the
 * table. Always inlined, so the call with the int32 of a choice array compiles to its own loop. */
static inline __attribute__((always_inline)) long
set_macs_loop(BurstObject *self, const void *index, Py_ssize_t itemsize, int is_signed,
              const uint8_t *table, int64_t nmac, const uint8_t *src)
{
    long done = 0;
    const int parsed = self->parsed_valid != PARSED_NONE;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        int64_t k = idx_read(index, i, itemsize, is_signed);
        if (k < 0 || (parsed && self->reason[i] != NF_OK))
            continue;
        if (k >= nmac) {
            PyErr_Format(PyExc_IndexError, "index[%zd] = %lld beyond mac_table (%lld)",
                         i, (long long)k, (long long)nmac);
            return -1;
        }
        nf_set_macs(rte_pktmbuf_mtod(self->pkts[i], uint8_t *), table + 6 * k, src);
        done++;
    }
    return done;
}

/* set_macs(index, mac_table, src_mac) -> number rewritten. Packet i gets dst MAC
 * mac_table[index[i]] (6 bytes each) and src MAC src_mac; skipped when the packet failed
 * to parse (after parse()) or index[i] < 0. Called once per burst by the vector styles, which
 * pass the same choice array burst after burst: the burst holds the buffer of the index it had
 * last (so, like a numpy array that is exported, that object cannot be resized meanwhile), and
 * the tables come as bytes, read in place; anything else with a buffer works too. */
static PyObject *Burst_set_macs(BurstObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "set_macs(index, mac_table, src_mac)");
    Py_buffer tab = {0}, srcm = {0};
    const uint8_t *table, *src;
    Py_ssize_t table_len;
    if (PyBytes_Check(args[1])) {
        table = (const uint8_t *)PyBytes_AS_STRING(args[1]);
        table_len = PyBytes_GET_SIZE(args[1]);
    } else {
        if (PyObject_GetBuffer(args[1], &tab, PyBUF_SIMPLE) < 0)
            return NULL;
        table = tab.buf;
        table_len = tab.len;
    }
    if (PyBytes_Check(args[2]) && PyBytes_GET_SIZE(args[2]) == 6) {
        src = (const uint8_t *)PyBytes_AS_STRING(args[2]);
    } else {
        if (PyObject_GetBuffer(args[2], &srcm, PyBUF_SIMPLE) < 0) {
            if (tab.obj)
                PyBuffer_Release(&tab);
            return NULL;
        }
        src = srcm.buf;
    }
    PyObject *ret = NULL;
    IdxBuf ib;
    if ((srcm.obj && srcm.len != 6) || table_len % 6) {
        PyErr_SetString(PyExc_ValueError, "src_mac must be 6 bytes, mac_table 6*k bytes");
        goto out;
    }
    if (args[0] != self->index_of || self->index_view.v.len / self->index_view.v.itemsize <
                                         self->n) {
        if (get_index(args[0], &ib, self->n, "index") < 0)
            goto out;
        burst_unpin_index(self);                /* held until another index comes */
        Py_INCREF(args[0]);
        self->index_of = args[0];
        self->index_view = ib;
    }
    const IdxBuf *idx = &self->index_view;
    int64_t nmac = table_len / 6;
    long done = idx->v.itemsize == 4 && idx->is_signed  /* int32: a BatchFlowCache choice */
                    ? set_macs_loop(self, idx->v.buf, 4, 1, table, nmac, src)
                    : set_macs_loop(self, idx->v.buf, idx->v.itemsize, idx->is_signed, table,
                                    nmac, src);
    if (done >= 0)
        ret = PyLong_FromLong(done);
out:
    if (tab.obj)
        PyBuffer_Release(&tab);
    if (srcm.obj)
        PyBuffer_Release(&srcm);
    return ret;
}

static PyObject *burst_nat(BurstObject *self, PyObject *args, int dst)
{
    PyObject *io, *ipo, *pto;
    if (!PyArg_ParseTuple(args, "OOO", &io, &ipo, &pto))
        return NULL;
    if (self->parsed_valid != PARSED_HEADERS) {
        PyErr_SetString(PyExc_RuntimeError, "call parse() before a NAT rewrite");
        return NULL;
    }
    IdxBuf ib;
    Py_buffer ip, pt;
    if (get_index(io, &ib, self->n, "index") < 0)
        return NULL;
    if (PyObject_GetBuffer(ipo, &ip, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&ib.v);
        return NULL;
    }
    if (PyObject_GetBuffer(pto, &pt, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&ib.v);
        PyBuffer_Release(&ip);
        return NULL;
    }
    PyObject *ret = NULL;
    if (ip.itemsize != 4 || pt.itemsize != 2 || ip.len / 4 != pt.len / 2) {
        PyErr_SetString(PyExc_ValueError, "ip_table must be uint32, port_table uint16, "
                        "same length");
        goto out;
    }
    int64_t nb = ip.len / 4;
    long done = 0;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        int64_t k = idx_at(&ib, i);
        if (k < 0 || self->reason[i] != NF_OK)
            continue;
        if (k >= nb) {
            PyErr_Format(PyExc_IndexError, "index[%zd] = %lld beyond table (%lld)", i,
                         (long long)k, (long long)nb);
            goto out;
        }
        uint8_t *f = rte_pktmbuf_mtod(self->pkts[i], uint8_t *);
        uint32_t nip = ((const uint32_t *)ip.buf)[k];
        uint16_t npt = ((const uint16_t *)pt.buf)[k];
        if (dst) {
            nf_nat_dst(f, &self->parsed[i], nip, npt);
            self->parsed[i].dst_ip = nip;
            self->parsed[i].dst_port = npt;
        } else {
            nf_nat_src(f, &self->parsed[i], nip, npt);
            self->parsed[i].src_ip = nip;
            self->parsed[i].src_port = npt;
        }
        done++;
    }
    ret = PyLong_FromLong(done);
out:
    PyBuffer_Release(&ib.v);
    PyBuffer_Release(&ip);
    PyBuffer_Release(&pt);
    return ret;
}
static PyObject *Burst_nat_dst(BurstObject *s, PyObject *a) { return burst_nat(s, a, 1); }
static PyObject *Burst_nat_src(BurstObject *s, PyObject *a) { return burst_nat(s, a, 0); }

/* keep(mask=None) -> kept. Frees packet i when mask[i] == 0 (or, without a mask, when it
 * failed parse()); the kept ones are compacted to the front in order. */
static PyObject *Burst_keep(BurstObject *self, PyObject *args)
{
    PyObject *mo = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &mo))
        return NULL;
    IdxBuf ib;
    int use_mask = mo != Py_None;
    if (!use_mask && self->parsed_valid == PARSED_NONE) {
        PyErr_SetString(PyExc_RuntimeError, "keep() without a mask needs parse() first");
        return NULL;
    }
    if (use_mask && get_index(mo, &ib, self->n, "mask") < 0)
        return NULL;
    if (self->n && need_eal()) {
        if (use_mask) PyBuffer_Release(&ib.v);
        return NULL;
    }
    struct rte_mbuf *drop[4096];
    unsigned nd = 0;
    uint16_t w = 0;
    for (uint16_t i = 0; i < self->n; i++) {
        int ok = use_mask ? idx_at(&ib, i) != 0 : self->reason[i] == NF_OK;
        if (use_mask && self->parsed_valid != PARSED_NONE && self->reason[i] != NF_OK)
            ok = 0;
        if (ok) {
            self->pkts[w] = self->pkts[i];
            self->parsed[w] = self->parsed[i];
            self->reason[w] = self->reason[i];
            w++;
        } else {
            drop[nd++] = self->pkts[i];
        }
    }
    if (nd)
        rte_pktmbuf_free_bulk(drop, nd);
    self->n = w;
    if (use_mask)
        PyBuffer_Release(&ib.v);
    return PyLong_FromLong(w);
}

/* split(mask) -> new Burst with the packets where mask[i] != 0 (moved out of this one). */
static PyObject *Burst_split(BurstObject *self, PyObject *mo)
{
    IdxBuf ib;
    if (get_index(mo, &ib, self->n, "mask") < 0)
        return NULL;
    BurstObject *o = burst_new(self->cap);
    if (!o) {
        PyBuffer_Release(&ib.v);
        return NULL;
    }
    o->parsed_valid = self->parsed_valid;
    uint16_t w = 0;
    for (uint16_t i = 0; i < self->n; i++) {
        if (idx_at(&ib, i)) {
            o->pkts[o->n] = self->pkts[i];
            o->parsed[o->n] = self->parsed[i];
            o->reason[o->n] = self->reason[i];
            o->n++;
        } else {
            self->pkts[w] = self->pkts[i];
            self->parsed[w] = self->parsed[i];
            self->reason[w] = self->reason[i];
            w++;
        }
    }
    self->n = w;
    PyBuffer_Release(&ib.v);
    return (PyObject *)o;
}

/* Poll port/queue into the burst (its old mbufs freed first). A non-empty poll starts the busy
 * timer at the TSC read just before polling: busy cycles = from the poll that brought packets
 * to the transmit that took them (empty polls are not work). */
static uint16_t burst_rx(BurstObject *b, uint16_t port, uint16_t queue, uint16_t n)
{
    if (b->n) {
        burst_stop_timer(b, rte_rdtsc());
        burst_release(b);
    }
    if (n > b->cap)
        n = b->cap;
    b->parsed_valid = PARSED_NONE;
    uint64_t t0 = rte_rdtsc();
    b->n = rte_eth_rx_burst(port, queue, b->pkts, n);
    if (b->n) {
        b->t0 = t0;
        b->t_pkts = b->n;
        b->acct = &q_acct[port][queue < MAX_Q ? queue : MAX_Q - 1];
    }
    return b->n;
}

/* Transmit the whole burst on port/queue; what the driver does not take is freed (a drop). The
 * burst is empty afterwards and its busy timer stops. */
static uint16_t burst_tx(BurstObject *b, uint16_t port, uint16_t queue)
{
    uint16_t sent = b->n ? rte_eth_tx_burst(port, queue, b->pkts, b->n) : 0;
    if (sent < b->n)
        rte_pktmbuf_free_bulk(b->pkts + sent, b->n - sent);
    b->n = 0;
    b->parsed_valid = PARSED_NONE;
    burst_stop_timer(b, rte_rdtsc());
    return sent;
}

/* ------------------------------------------------------------------ FlowKernel
 * Everything the fused per-burst NF (Burst.forward) reads, held once: the ParseArrays block,
 * the BatchFlowCache's slots and alive (vnf.batch), the VIP, the backends' MACs and our MAC.
 * Taking numpy buffers costs ~0.1 us each; a per-burst call must not ask for ten of them (the
 * same idea as registering buffers with a NIC once, not per I/O). Python rebuilds it when the
 * cache's arrays change (vnf.dpdk.FusedForward). */
enum { FK_BLOCK, FK_SLOTS, FK_ALIVE, FK_CHOICE, FK_MACS, FK_NBUF };

typedef struct {
    PyObject_HEAD
    Py_buffer buf[FK_NBUF];
    Py_ssize_t capacity;       /* packets the block and choice hold */
    struct nf_vip vip;
    uint32_t vip_hash_parts[64];   /* the flow hash's destination part per protocol */
    struct nf_cache cache;
    uint8_t src_mac[6];
    uint32_t nmacs;
    int port;                  /* send(): the port to transmit on */
    PyObject *slow;            /* send(): called when a burst is not all hits */
    unsigned long long fast_packets;   /* send(): packets forwarded without Python */
} FlowKernelObject;

static void FlowKernel_dealloc(FlowKernelObject *self)
{
    Py_XDECREF(self->slow);
    for (int k = 0; k < FK_NBUF; k++)
        if (self->buf[k].obj)
            PyBuffer_Release(&self->buf[k]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *FlowKernel_tp_new(PyTypeObject *t, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"block", "slots", "alive", "choice", "mac_table", "vip", "port",
                          "proto_mask", "src_mac", "tx_port", "slow", NULL};
    PyObject *o[FK_NBUF], *slow = Py_None;
    unsigned long vip;
    int port, tx_port = -1;
    unsigned long long mask;
    Py_buffer srcm;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOkiKy*|iO", kwl, &o[FK_BLOCK], &o[FK_SLOTS],
                                     &o[FK_ALIVE], &o[FK_CHOICE], &o[FK_MACS], &vip, &port,
                                     &mask, &srcm, &tx_port, &slow))
        return NULL;
    FlowKernelObject *self = (FlowKernelObject *)t->tp_alloc(t, 0);
    if (!self) {
        PyBuffer_Release(&srcm);
        return NULL;
    }
    self->port = tx_port;
    Py_INCREF(slow);
    self->slow = slow;
    static const char *names[FK_NBUF] = {"block", "slots", "alive", "choice", "mac_table"};
    static const Py_ssize_t item[FK_NBUF] = {1, sizeof(struct nf_flow_slot), 1, 4, 1};
    static const int writable[FK_NBUF] = {1, 1, 0, 1, 0};
    for (int k = 0; k < FK_NBUF; k++) {
        int flags = PyBUF_C_CONTIGUOUS | (writable[k] ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(o[k], &self->buf[k], flags) < 0)
            goto fail;
        if (self->buf[k].len % item[k]) {
            PyErr_Format(PyExc_ValueError, "%s: length not a multiple of %zd", names[k], item[k]);
            goto fail;
        }
    }
    Py_ssize_t slots = self->buf[FK_SLOTS].len / (Py_ssize_t)sizeof(struct nf_flow_slot);
    self->capacity = self->buf[FK_BLOCK].len / 26;
    if (slots < 1 || (slots & (slots - 1)) || slots > (Py_ssize_t)1 << 31 ||
        (uintptr_t)self->buf[FK_SLOTS].buf % NF_CACHE_ALIGN) {
        PyErr_SetString(PyExc_ValueError, "slots: a power-of-two count of slots, starting on a "
                        "multiple of 32 bytes (BatchFlowCache.slot_bytes)");
        goto fail;
    }
    if (self->buf[FK_BLOCK].len != 26 * self->capacity ||
        self->buf[FK_CHOICE].len / 4 < self->capacity || self->buf[FK_MACS].len % 6 ||
        srcm.len != 6 || vip > UINT32_MAX || port < 0 || port > 0xffff) {
        PyErr_SetString(PyExc_ValueError, "block: a ParseArrays block; choice >= its capacity; "
                        "mac_table 6*k bytes; src_mac 6 bytes; vip, port in range");
        goto fail;
    }
    self->vip = (struct nf_vip){.ip = (uint32_t)vip, .port = (uint16_t)port, .proto_mask = mask};
    nf_vip_hash_parts(&self->vip, self->vip_hash_parts);
    self->cache = (struct nf_cache){
        .slots = self->buf[FK_SLOTS].buf, .mask = (uint32_t)(slots - 1),
        .alive = self->buf[FK_ALIVE].buf, .nalive = (uint32_t)self->buf[FK_ALIVE].len};
    memcpy(self->src_mac, srcm.buf, 6);
    self->nmacs = (uint32_t)(self->buf[FK_MACS].len / 6);
    PyBuffer_Release(&srcm);
    return (PyObject *)self;
fail:
    PyBuffer_Release(&srcm);
    Py_DECREF(self);
    return NULL;
}

static PyMethodDef FlowKernel_methods[];
static PyTypeObject FlowKernelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vnf.dpdk._dpdk.FlowKernel",
    .tp_basicsize = sizeof(FlowKernelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FlowKernel(block, slots, alive, choice, mac_table, vip, port, proto_mask, "
              "src_mac[, tx_port, slow]): the buffers Burst.forward uses, "
              "held once (see vnf.dpdk.FusedForward)",
    .tp_new = FlowKernel_tp_new,
    .tp_dealloc = (destructor)FlowKernel_dealloc,
    .tp_methods = FlowKernel_methods,
};

/* The whole per-burst NF, every step from nf.h: for each packet nf_parse + the flow hash (into
 * the kernel's ParseArrays: only the hash and reason columns, all the slow path reads; the parsed
 * headers stay in a local and are not stored), nf_for_vip, nf_cache_lookup, and for a hit
 * nf_set_macs (DSR: the backend's MAC, ours as the source). choice[i] = backend number (hit),
 * -1 (not to balance), -2 (miss: the pool decides, in Python, then set_macs). count[] = parsed,
 * valid (to balance), hits.
 *
 * Two passes over the burst, because the work waits on memory more than it computes:
 *   1. parse + hash each packet. Its frame was just written by the other side of the virtio
 *      ring, on another core, so its first touch is a cache miss: packet i + PREFETCH_AHEAD is
 *      requested while packet i is parsed, and the misses overlap with work (as DPDK's own
 *      examples do). A packet for the service hashes only its source (nf_flow_hash_src): the
 *      destination's part was computed once (nf_vip_hash_parts). Once the hash is known, the
 *      flow-cache set it will read is requested too.
 *   2. look each packet up and rewrite the hits: by now its cache slot has arrived and its
 *      frame is still in L1 (32 frames' headers are 2 KiB).
 * Prefetching hides memory latency; it does not remove the work. Per packet the loop stores only
 * what is read afterwards (reason, hash, choice, the two MACs): a store is work too. */
static int fk_forward(FlowKernelObject *k, BurstObject *self, double now, Py_ssize_t count[3])
{
    if (self->n > k->capacity) {
        PyErr_Format(PyExc_ValueError, "burst of %d packets, kernel arrays for %zd",
                     (int)self->n, k->capacity);
        return -1;
    }
    struct block_cols b = block_cols(k->buf[FK_BLOCK].buf, k->capacity);
    int32_t *choice = k->buf[FK_CHOICE].buf;
    const uint8_t *macs = k->buf[FK_MACS].buf;
    const struct nf_cache *cache = &k->cache;
    Py_ssize_t n = self->n, parsed = 0, valid = 0, hits = 0;
    enum { PREFETCH_AHEAD = 4 };
    for (Py_ssize_t i = 0; i < n && i < PREFETCH_AHEAD; i++)
        rte_prefetch0(rte_pktmbuf_mtod(self->pkts[i], void *));
    for (Py_ssize_t i = 0; i < n; i++) {                   /* pass 1: parse, hash, prefetch */
        if (i + PREFETCH_AHEAD < n)
            rte_prefetch0(rte_pktmbuf_mtod(self->pkts[i + PREFETCH_AHEAD], void *));
        struct rte_mbuf *m = self->pkts[i];
        struct nf_parsed p;
        int r = nf_parse(rte_pktmbuf_mtod(m, const uint8_t *), rte_pktmbuf_data_len(m), &p);
        self->reason[i] = b.rs[i] = (uint8_t)r;
        parsed += r == NF_OK;
        if (nf_for_vip(&k->vip, r, p.dst_ip, p.dst_port, p.proto)) {
            valid++;
            b.hs[i] = nf_flow_hash_src(k->vip_hash_parts[p.proto], p.src_ip, p.src_port);
            nf_cache_prefetch(cache, b.hs[i]);
            choice[i] = NF_CHOICE_MISS;                    /* to look up in pass 2 */
        } else {
            b.hs[i] = r == NF_OK ? nf_flow_hash(&p) : 0;
            choice[i] = NF_CHOICE_DROP;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {                   /* pass 2: look up, rewrite */
        if (choice[i] == NF_CHOICE_DROP)
            continue;
        int32_t c = nf_cache_lookup(cache, b.hs[i], now);
        if (c >= 0 && (uint32_t)c >= k->nmacs)
            c = NF_CHOICE_MISS;                            /* no MAC for it: let Python decide */
        if (c >= 0) {
            hits++;
            nf_set_macs(rte_pktmbuf_mtod(self->pkts[i], uint8_t *), macs + 6 * c, k->src_mac);
        }
        choice[i] = c;
    }
    self->parsed_valid = PARSED_REASONS;
    count[0] = parsed;
    count[1] = valid;
    count[2] = hits;
    return 0;
}

static double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);      /* the clock of Python's time.monotonic() */
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Burst.forward(kernel, now) -> (parsed, valid, hits): fk_forward for this burst. */
static PyObject *Burst_forward(BurstObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &FlowKernelType))
        return PyErr_Format(PyExc_TypeError, "forward(kernel: FlowKernel, now: float)");
    double now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t c[3];
    if (fk_forward((FlowKernelObject *)args[0], self, now, c) < 0)
        return NULL;
    return Py_BuildValue("nnn", c[0], c[1], c[2]);
}

/* FlowKernel.send(burst, queue) -> packets sent. One call per burst from the poll loop: the time,
 * fk_forward, and when every packet hit the flow cache, the transmit too (counted in
 * fast_packets). Otherwise (drops, new flows) slow(burst, queue, parsed, valid, hits, now) is
 * called, which must transmit the burst and return what it sent. */
static PyObject *FlowKernel_send(FlowKernelObject *k, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &BurstType))
        return PyErr_Format(PyExc_TypeError, "send(burst: Burst, queue: int)");
    BurstObject *b = (BurstObject *)args[0];
    long queue = PyLong_AsLong(args[1]);
    if (queue == -1 && PyErr_Occurred())
        return NULL;
    if (k->port < 0 || k->slow == Py_None || queue < 0 || queue > 65535)
        return PyErr_Format(PyExc_ValueError, "send() needs a kernel made with tx_port and "
                            "slow, and a queue number");
    if (eal_state != 1 && need_eal())
        return NULL;
    double now = monotonic_now();
    Py_ssize_t c[3];
    Py_ssize_t n = b->n;
    if (fk_forward(k, b, now, c) < 0)
        return NULL;
    if (c[2] == n) {
        k->fast_packets += (unsigned long long)n;
        return PyLong_FromLong(burst_tx(b, (uint16_t)k->port, (uint16_t)queue));
    }
    return PyObject_CallFunction(k->slow, "Olnnnd", (PyObject *)b, queue, c[0], c[1], c[2], now);
}

/* FlowKernel.poll(burst, queues, polls) -> (sent, bursts): the fused poll loop itself, in C.
 * `polls` rounds over `queues` (a tuple of RX queue numbers of the kernel's port; each burst goes
 * out on the TX queue of its number), `burst` the scratch Burst they fill.
 *
 * Bursts amortise per-call costs, and a Python call per burst is such a cost: at 32 packets a
 * burst, the rx_burst call, the send call and the loop's bookkeeping in Python weigh as much as
 * the NF's C work. Here Python runs once per `polls` rounds (the caller's loop: stop flag, pool
 * refresh, expiry), and per burst only when it is not all hits (the slow callback). The GIL is
 * released while polling, so several lcores' loops run their C at the same time.
 * The flow cache's last-seen times are the clock read at the start of the call: a call lasts
 * milliseconds, the idle timeout tens of seconds. */
static PyObject *FlowKernel_poll(FlowKernelObject *k, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyObject_TypeCheck(args[0], &BurstType) || !PyTuple_Check(args[1]))
        return PyErr_Format(PyExc_TypeError, "poll(burst: Burst, queues: tuple, polls: int)");
    BurstObject *b = (BurstObject *)args[0];
    long polls = PyLong_AsLong(args[2]);
    if (polls == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t nq = PyTuple_GET_SIZE(args[1]);
    uint16_t queues[MAX_Q];
    if (nq < 1 || nq > MAX_Q)
        return PyErr_Format(PyExc_ValueError, "poll: 1..%d queues", MAX_Q);
    for (Py_ssize_t i = 0; i < nq; i++) {
        long q = PyLong_AsLong(PyTuple_GET_ITEM(args[1], i));
        if (q == -1 && PyErr_Occurred())
            return NULL;
        if (q < 0 || q >= MAX_Q)
            return PyErr_Format(PyExc_ValueError, "poll: queue %ld out of range", q);
        queues[i] = (uint16_t)q;
    }
    if (k->port < 0 || k->slow == Py_None)
        return PyErr_Format(PyExc_ValueError, "poll() needs a kernel made with tx_port and slow");
    if (b->cap > k->capacity)
        return PyErr_Format(PyExc_ValueError, "burst of capacity %d, kernel arrays for %zd",
                            (int)b->cap, k->capacity);
    if (eal_state != 1 && need_eal())
        return NULL;
    uint16_t port = (uint16_t)k->port;
    double now = monotonic_now();
    unsigned long long sent = 0, bursts = 0;
    PyThreadState *ts = PyEval_SaveThread();
    for (long p = 0; p < polls; p++) {
        for (Py_ssize_t qi = 0; qi < nq; qi++) {
            uint16_t q = queues[qi];
            uint16_t n = burst_rx(b, port, q, b->cap);
            if (!n)
                continue;
            bursts++;
            Py_ssize_t c[3];
            fk_forward(k, b, now, c);                 /* cannot fail: capacity checked above */
            if (c[2] == n) {                           /* all hits: no Python at all */
                k->fast_packets += n;
                sent += burst_tx(b, port, q);
                continue;
            }
            PyEval_RestoreThread(ts);                  /* drops or new flows: Python decides */
            PyObject *r = PyObject_CallFunction(k->slow, "Oinnnd", (PyObject *)b, (int)q, c[0],
                                                c[1], c[2], now);
            long s = r ? PyLong_AsLong(r) : -1;
            Py_XDECREF(r);
            if (s < 0 && PyErr_Occurred())
                return NULL;
            sent += (unsigned long long)s;
            ts = PyEval_SaveThread();
        }
    }
    PyEval_RestoreThread(ts);
    return Py_BuildValue("KK", sent, bursts);
}

static PyObject *FlowKernel_take_fast_packets(FlowKernelObject *k, PyObject *unused)
{
    unsigned long long n = k->fast_packets;
    k->fast_packets = 0;
    return PyLong_FromUnsignedLongLong(n);
}

static PyMethodDef FlowKernel_methods[] = {
    {"send", (PyCFunction)(void (*)(void))FlowKernel_send, METH_FASTCALL,
     "send(burst, queue) -> sent: forward the burst and, when all of it hit, transmit it; "
     "else hand it to slow(burst, queue, parsed, valid, hits, now)"},
    {"poll", (PyCFunction)(void (*)(void))FlowKernel_poll, METH_FASTCALL,
     "poll(burst, queues, polls) -> (sent, bursts): the fused poll loop in C, GIL released; "
     "slow(burst, queue, parsed, valid, hits, now) for bursts that are not all hits"},
    {"take_fast_packets", (PyCFunction)FlowKernel_take_fast_packets, METH_NOARGS,
     "packets send() forwarded in C since the last call (then zeroed)"},
    {NULL}};

/* --- the per-packet style's calls: one packet at a time, each a single cheap C call.
 * Python per packet is the cost the lab measures; these keep it to the decision itself: no
 * memoryview, no Python parser, no NamedTuple, no slice assignments. */
static PyObject *reason_names;      /* vnf.packet.REASONS, handed over by vnf.dpdk at import */

static int burst_index(BurstObject *self, PyObject *arg, Py_ssize_t *i)
{
    *i = PyLong_AsSsize_t(arg);
    if (*i == -1 && PyErr_Occurred())
        return -1;
    if (*i < 0 || *i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "burst index out of range");
        return -1;
    }
    return 0;
}

/* flow(i) -> (src_ip, dst_ip, src_port, dst_port, proto) or None: nf_parse of packet i. The
 * tuple equals (and hashes like) the FiveTuple vnf.packet.parse_frame gives, so it is the same
 * flow-table key; None when the packet did not parse (reason(i) says why). */
static PyObject *Burst_flow(BurstObject *self, PyObject *arg)
{
    Py_ssize_t i;
    if (burst_index(self, arg, &i) < 0)
        return NULL;
    struct rte_mbuf *m = self->pkts[i];
    struct nf_parsed *p = &self->parsed[i];
    int r = nf_parse(rte_pktmbuf_mtod(m, const uint8_t *), rte_pktmbuf_data_len(m), p);
    self->reason[i] = (uint8_t)r;
    if (r != NF_OK)
        Py_RETURN_NONE;
    PyObject *t = PyTuple_New(5);
    if (!t)
        return NULL;
    PyObject *v[5] = {PyLong_FromUnsignedLong(p->src_ip), PyLong_FromUnsignedLong(p->dst_ip),
                      PyLong_FromLong(p->src_port), PyLong_FromLong(p->dst_port),
                      PyLong_FromLong(p->proto)};
    for (int k = 0; k < 5; k++) {
        if (!v[k]) {
            for (int j = k + 1; j < 5; j++)
                Py_XDECREF(v[j]);
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, k, v[k]);
    }
    return t;
}

/* reason(i) -> why flow(i) gave None: a vnf.packet.REASONS name (None: it parsed). */
static PyObject *Burst_reason(BurstObject *self, PyObject *arg)
{
    Py_ssize_t i;
    if (burst_index(self, arg, &i) < 0)
        return NULL;
    int r = self->reason[i];
    if (!reason_names || r >= PyTuple_GET_SIZE(reason_names))
        return PyLong_FromLong(r);
    PyObject *name = PyTuple_GET_ITEM(reason_names, r);
    Py_INCREF(name);
    return name;
}

/* set_macs_at(i, dst_mac, src_mac): packet i's Ethernet addresses (6 bytes each), in place. */
static PyObject *Burst_set_macs_at(BurstObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t i;
    if (nargs != 3 || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2]) ||
        PyBytes_GET_SIZE(args[1]) != 6 || PyBytes_GET_SIZE(args[2]) != 6)
        return PyErr_Format(PyExc_TypeError, "set_macs_at(i, dst_mac: 6 bytes, src_mac: 6 bytes)");
    if (burst_index(self, args[0], &i) < 0)
        return NULL;
    nf_set_macs(rte_pktmbuf_mtod(self->pkts[i], uint8_t *),
                (const uint8_t *)PyBytes_AS_STRING(args[1]),
                (const uint8_t *)PyBytes_AS_STRING(args[2]));
    Py_RETURN_NONE;
}

static PyObject *m_use_reason_names(PyObject *mod, PyObject *names)
{
    if (!PyTuple_Check(names))
        return PyErr_Format(PyExc_TypeError, "use_reason_names(tuple of names)");
    Py_INCREF(names);
    Py_XSETREF(reason_names, names);
    Py_RETURN_NONE;
}

static PyObject *Burst_get_capacity(BurstObject *self, void *c) { return PyLong_FromLong(self->cap); }

static PyObject *Burst_lengths(BurstObject *self, PyObject *unused)
{
    PyObject *l = PyList_New(self->n);
    for (Py_ssize_t i = 0; l && i < self->n; i++)
        PyList_SET_ITEM(l, i, PyLong_FromLong(rte_pktmbuf_data_len(self->pkts[i])));
    return l;
}

static PyMethodDef Burst_methods[] = {
    {"data", (PyCFunction)Burst_data, METH_O,
     "data(i) -> writable memoryview over packet i (valid until tx/free)"},
    {"frame", (PyCFunction)Burst_frame, METH_O, "frame(i) -> bytes copy of packet i"},
    {"flow", (PyCFunction)Burst_flow, METH_O,
     "flow(i) -> (src_ip, dst_ip, src_port, dst_port, proto), or None if packet i did not parse"},
    {"reason", (PyCFunction)Burst_reason, METH_O,
     "reason(i) -> why flow(i) was None (a vnf.packet.REASONS name; None: it parsed)"},
    {"set_macs_at", (PyCFunction)(void (*)(void))Burst_set_macs_at, METH_FASTCALL,
     "set_macs_at(i, dst_mac, src_mac): rewrite packet i's Ethernet addresses in place"},
    {"lengths", (PyCFunction)Burst_lengths, METH_NOARGS, "data lengths of the packets"},
    {"free", (PyCFunction)Burst_free, METH_NOARGS, "free all mbufs (ends the busy timer)"},
    {"parse", (PyCFunction)Burst_parse, METH_O,
     "parse(arrays) -> n: C batch parse + flow hash into numpy arrays (see ParseArrays)"},
    {"forward", (PyCFunction)(void (*)(void))Burst_forward, METH_FASTCALL,
     "forward(kernel, now) -> (parsed, valid, hits): parse, VIP check, flow cache and MAC "
     "rewrite of the hits, for the whole burst (see FlowKernel)"},
    {"set_macs", (PyCFunction)(void (*)(void))Burst_set_macs, METH_FASTCALL,
     "set_macs(index, mac_table, src_mac) -> rewritten count"},
    {"nat_dst", (PyCFunction)Burst_nat_dst, METH_VARARGS,
     "nat_dst(index, ip_table_u32, port_table_u16) -> rewritten count (needs parse())"},
    {"nat_src", (PyCFunction)Burst_nat_src, METH_VARARGS,
     "nat_src(index, ip_table_u32, port_table_u16) -> rewritten count (needs parse())"},
    {"keep", (PyCFunction)Burst_keep, METH_VARARGS,
     "keep(mask=None) -> kept: free packets with mask 0 or a parse failure, compact the rest"},
    {"split", (PyCFunction)Burst_split, METH_O,
     "split(mask) -> Burst: move packets with mask != 0 into a new burst"},
    {NULL}};
static PyGetSetDef Burst_getset[] = {
    {"capacity", (getter)Burst_get_capacity, NULL, "max packets", NULL}, {NULL}};
static PySequenceMethods Burst_seq = {
    .sq_length = (lenfunc)Burst_len,
    .sq_item = (ssizeargfunc)Burst_item,
};
static PyTypeObject BurstType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vnf.dpdk._dpdk.Burst",
    .tp_basicsize = sizeof(BurstObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Burst(capacity=32): mbufs from rx_burst/dequeue; burst[i] is a writable "
              "memoryview valid until tx/free",
    .tp_new = Burst_tp_new,
    .tp_dealloc = (destructor)Burst_dealloc,
    .tp_methods = Burst_methods,
    .tp_getset = Burst_getset,
    .tp_as_sequence = &Burst_seq,
};

/* ------------------------------------------------------------------ Ring */
typedef struct {
    PyObject_HEAD
    struct rte_ring *r;
} RingObject;
static PyTypeObject RingType;

static void Ring_dealloc(RingObject *self)
{
    if (self->r && eal_state == 1) {
        void *objs[64];
        unsigned n;
        while ((n = rte_ring_dequeue_burst(self->r, objs, 64, NULL)) > 0)
            rte_pktmbuf_free_bulk((struct rte_mbuf **)objs, n);
        rte_ring_free(self->r);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Ring_enqueue(RingObject *self, PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, &BurstType)) {
        PyErr_SetString(PyExc_TypeError, "enqueue(burst)");
        return NULL;
    }
    if (need_eal()) return NULL;
    BurstObject *b = (BurstObject *)arg;
    unsigned n = rte_ring_enqueue_burst(self->r, (void **)b->pkts, b->n, NULL);
    if (n < b->n)
        rte_pktmbuf_free_bulk(b->pkts + n, b->n - n);
    b->n = 0;
    b->parsed_valid = PARSED_NONE;
    burst_stop_timer(b, rte_rdtsc());
    return PyLong_FromUnsignedLong(n);
}

static PyObject *Ring_dequeue(RingObject *self, PyObject *args)
{
    PyObject *into = Py_None;
    Py_ssize_t n = 32;
    if (!PyArg_ParseTuple(args, "|nO", &n, &into))
        return NULL;
    if (need_eal()) return NULL;
    BurstObject *b;
    if (into != Py_None) {
        if (!PyObject_TypeCheck(into, &BurstType)) {
            PyErr_SetString(PyExc_TypeError, "into must be a Burst");
            return NULL;
        }
        b = (BurstObject *)into;
        Py_INCREF(b);
        burst_stop_timer(b, rte_rdtsc());
        burst_release(b);
    } else if (!(b = burst_new(n))) {
        return NULL;
    }
    if (n > b->cap) n = b->cap;
    uint64_t t0 = rte_rdtsc();
    b->n = (uint16_t)rte_ring_dequeue_burst(self->r, (void **)b->pkts, (unsigned)n, NULL);
    b->parsed_valid = PARSED_NONE;
    if (b->n) {
        b->t0 = t0;
        b->t_pkts = b->n;
        b->acct = &ring_acct;
    }
    return (PyObject *)b;
}

static PyObject *Ring_count(RingObject *self, PyObject *u)
{
    return PyLong_FromUnsignedLong(rte_ring_count(self->r));
}
static PyObject *Ring_free_count(RingObject *self, PyObject *u)
{
    return PyLong_FromUnsignedLong(rte_ring_free_count(self->r));
}
static PyMethodDef Ring_methods[] = {
    {"enqueue", (PyCFunction)Ring_enqueue, METH_O,
     "enqueue(burst) -> n queued; mbufs that did not fit are FREED; burst ends empty"},
    {"dequeue", (PyCFunction)Ring_dequeue, METH_VARARGS, "dequeue(n=32, into=None) -> Burst"},
    {"count", (PyCFunction)Ring_count, METH_NOARGS, "mbufs in the ring"},
    {"free_count", (PyCFunction)Ring_free_count, METH_NOARGS, "free slots"},
    {NULL}};
static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vnf.dpdk._dpdk.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "rte_ring of mbufs (create with ring_create)",
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
};

/* ------------------------------------------------------------------ module functions */
static char **eal_argv;

static PyObject *m_eal_init(PyObject *mod, PyObject *seq)
{
    if (eal_state) {
        PyErr_SetString(DpdkError, "EAL can only be initialised once per process");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(seq, "eal_init(list of str)");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    eal_argv = calloc(n + 2, sizeof(char *));   /* kept for the process lifetime: EAL may
                                                   keep pointers into argv */
    eal_argv[0] = strdup("vnflab");
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *s = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(fast, i));
        if (!s) {
            Py_DECREF(fast);
            return NULL;
        }
        eal_argv[i + 1] = strdup(s);
    }
    Py_DECREF(fast);
    int ret;
    Py_BEGIN_ALLOW_THREADS
    ret = rte_eal_init((int)n + 1, eal_argv);
    Py_END_ALLOW_THREADS
    if (ret < 0) {
        eal_state = 2;     /* a failed rte_eal_init cannot be retried in this process */
        return dpdk_err(rte_errno, "rte_eal_init");
    }
    eal_state = 1;
    return PyLong_FromLong(ret);
}

static PyObject *m_eal_cleanup(PyObject *mod, PyObject *u)
{
    if (eal_state != 1)
        Py_RETURN_NONE;
    uint16_t p;
    RTE_ETH_FOREACH_DEV(p) {
        rte_eth_dev_stop(p);
        rte_eth_dev_close(p);
    }
    eal_state = 2;
    int ret = rte_eal_cleanup();
    if (ret < 0)
        return dpdk_err(ret, "rte_eal_cleanup");
    Py_RETURN_NONE;
}

static PyObject *m_eal_state(PyObject *mod, PyObject *u)
{
    return PyLong_FromLong(eal_state);
}

static PyObject *m_pool_create(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"name", "n", "cache", "data_room", NULL};
    const char *name;
    unsigned n, cache = 256, room = RTE_MBUF_DEFAULT_BUF_SIZE;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sI|II", kwl, &name, &n, &cache, &room))
        return NULL;
    if (need_eal()) return NULL;
    struct rte_mempool *mp = rte_pktmbuf_pool_create(name, n, cache, 0, (uint16_t)room,
                                                     (int)rte_socket_id());
    if (!mp)
        return dpdk_err(rte_errno, "rte_pktmbuf_pool_create(%s, n=%u)", name, n);
    MempoolObject *o = PyObject_New(MempoolObject, &MempoolType);
    if (o)
        o->mp = mp;
    return (PyObject *)o;
}

static PyObject *m_dev_probe(PyObject *mod, PyObject *args)
{
    const char *devargs;
    if (!PyArg_ParseTuple(args, "s", &devargs))
        return NULL;
    if (need_eal()) return NULL;
    int ret;
    Py_BEGIN_ALLOW_THREADS
    ret = rte_dev_probe(devargs);
    Py_END_ALLOW_THREADS
    if (ret < 0)
        return dpdk_err(ret, "rte_dev_probe(%s)", devargs);
    Py_RETURN_NONE;
}

static PyObject *m_port_by_name(PyObject *mod, PyObject *args)
{
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    if (need_eal()) return NULL;
    uint16_t port;
    int ret = rte_eth_dev_get_port_by_name(name, &port);
    if (ret < 0)
        return dpdk_err(ret, "rte_eth_dev_get_port_by_name(%s)", name);
    return PyLong_FromLong(port);
}

static PyObject *m_port_count(PyObject *mod, PyObject *u)
{
    if (need_eal()) return NULL;
    return PyLong_FromLong(rte_eth_dev_count_avail());
}

static PyObject *m_port_setup(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"port", "pool", "nrxq", "ntxq", "nrxd", "ntxd", NULL};
    long port;
    PyObject *pool;
    unsigned nrxq = 1, ntxq = 1, nrxd = 1024, ntxd = 1024;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "lO!|IIII", kwl, &port, &MempoolType, &pool,
                                     &nrxq, &ntxq, &nrxd, &ntxd))
        return NULL;
    if (check_port(port)) return NULL;
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof conf);
    int ret = rte_eth_dev_configure((uint16_t)port, (uint16_t)nrxq, (uint16_t)ntxq, &conf);
    if (ret < 0)
        return dpdk_err(ret, "rte_eth_dev_configure(port %ld, %u rxq, %u txq)", port, nrxq, ntxq);
    uint16_t rxd = (uint16_t)nrxd, txd = (uint16_t)ntxd;
    ret = rte_eth_dev_adjust_nb_rx_tx_desc((uint16_t)port, &rxd, &txd);
    if (ret < 0)
        return dpdk_err(ret, "rte_eth_dev_adjust_nb_rx_tx_desc(port %ld)", port);
    int sock = rte_eth_dev_socket_id((uint16_t)port);
    if (sock < 0) sock = (int)rte_socket_id();
    for (unsigned q = 0; q < nrxq; q++) {
        ret = rte_eth_rx_queue_setup((uint16_t)port, (uint16_t)q, rxd, (unsigned)sock, NULL,
                                     ((MempoolObject *)pool)->mp);
        if (ret < 0)
            return dpdk_err(ret, "rte_eth_rx_queue_setup(port %ld, queue %u)", port, q);
    }
    for (unsigned q = 0; q < ntxq; q++) {
        ret = rte_eth_tx_queue_setup((uint16_t)port, (uint16_t)q, txd, (unsigned)sock, NULL);
        if (ret < 0)
            return dpdk_err(ret, "rte_eth_tx_queue_setup(port %ld, queue %u)", port, q);
    }
    Py_RETURN_NONE;
}

static PyObject *m_port_start(PyObject *mod, PyObject *args)
{
    long port;
    int promisc = 1;
    if (!PyArg_ParseTuple(args, "l|p", &port, &promisc))
        return NULL;
    if (check_port(port)) return NULL;
    int ret;
    Py_BEGIN_ALLOW_THREADS
    ret = rte_eth_dev_start((uint16_t)port);
    Py_END_ALLOW_THREADS
    if (ret < 0)
        return dpdk_err(ret, "rte_eth_dev_start(port %ld)", port);
    if (promisc)
        rte_eth_promiscuous_enable((uint16_t)port);   /* some vdevs say ENOTSUP: fine */
    Py_RETURN_NONE;
}

/* One DPDK call on a port that returns 0 or -errno (stop, close). */
static PyObject *port_call(PyObject *args, int (*call)(uint16_t), const char *name)
{
    long port;
    if (port_arg(args, &port) < 0)
        return NULL;
    int ret = call((uint16_t)port);
    if (ret < 0)
        return dpdk_err(ret, "%s(port %ld)", name, port);
    Py_RETURN_NONE;
}

static PyObject *m_port_stop(PyObject *mod, PyObject *args)
{
    return port_call(args, rte_eth_dev_stop, "rte_eth_dev_stop");
}

static PyObject *m_port_close(PyObject *mod, PyObject *args)
{
    return port_call(args, rte_eth_dev_close, "rte_eth_dev_close");
}

static PyObject *m_port_mac(PyObject *mod, PyObject *args)
{
    long port;
    if (port_arg(args, &port) < 0)
        return NULL;
    struct rte_ether_addr a;
    int ret = rte_eth_macaddr_get((uint16_t)port, &a);
    if (ret < 0)
        return dpdk_err(ret, "rte_eth_macaddr_get(port %ld)", port);
    return PyBytes_FromStringAndSize((const char *)a.addr_bytes, 6);
}

static PyObject *m_port_link(PyObject *mod, PyObject *args)
{
    long port;
    if (port_arg(args, &port) < 0)
        return NULL;
    struct rte_eth_link l;
    memset(&l, 0, sizeof l);
    int ret = rte_eth_link_get_nowait((uint16_t)port, &l);
    if (ret < 0)
        return dpdk_err(ret, "rte_eth_link_get_nowait(port %ld)", port);
    return Py_BuildValue("{s:O,s:I,s:O}", "up", l.link_status ? Py_True : Py_False,
                         "speed_mbps", l.link_speed, "full_duplex",
                         l.link_duplex ? Py_True : Py_False);
}

static PyObject *u64list(const uint64_t *a, int n)
{
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++)
        PyList_SET_ITEM(l, i, PyLong_FromUnsignedLongLong(a[i]));
    return l;
}

static PyObject *m_port_stats(PyObject *mod, PyObject *args)
{
    long port;
    if (port_arg(args, &port) < 0)
        return NULL;
    struct rte_eth_stats s;
    int ret = rte_eth_stats_get((uint16_t)port, &s);
    if (ret < 0)
        return dpdk_err(ret, "rte_eth_stats_get(port %ld)", port);
    int nq = MAX_Q, ntq = MAX_Q;
    uint16_t nrx = 0, ntx = 0;
    struct rte_eth_dev_info di;
    if (rte_eth_dev_info_get((uint16_t)port, &di) == 0) {
        nrx = di.nb_rx_queues;   /* configured queue counts */
        ntx = di.nb_tx_queues;
    }
    if (nrx && nrx < nq) nq = nrx;
    if (ntx && ntx < ntq) ntq = ntx;
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:N,s:N,s:N,s:N,s:N}",
                         "ipackets", s.ipackets, "opackets", s.opackets, "ibytes", s.ibytes,
                         "obytes", s.obytes, "imissed", s.imissed, "ierrors", s.ierrors,
                         "oerrors", s.oerrors, "rx_nombuf", s.rx_nombuf,
                         "q_ipackets", u64list(s.q_ipackets, nq),
                         "q_opackets", u64list(s.q_opackets, ntq),
                         "q_ibytes", u64list(s.q_ibytes, nq),
                         "q_obytes", u64list(s.q_obytes, ntq),
                         "q_errors", u64list(s.q_errors, nq));
}

static PyObject *m_port_stats_reset(PyObject *mod, PyObject *args)
{
    long port;
    if (port_arg(args, &port) < 0)
        return NULL;
    int ret = rte_eth_stats_reset((uint16_t)port);
    if (ret < 0)
        return dpdk_err(ret, "rte_eth_stats_reset(port %ld)", port);
    Py_RETURN_NONE;
}

/* rx_burst(port, queue, n=32, into=None) -> Burst (fast path: positional args) */
static PyObject *m_rx_burst(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "rx_burst(port, queue, n=32, into=None)");
        return NULL;
    }
    long port = PyLong_AsLong(args[0]);
    long queue = PyLong_AsLong(args[1]);
    Py_ssize_t n = nargs > 2 ? PyLong_AsSsize_t(args[2]) : 32;
    if (PyErr_Occurred())
        return NULL;
    if (eal_state != 1 && need_eal())
        return NULL;
    if (port < 0 || port >= RTE_MAX_ETHPORTS || queue < 0 || queue > 65535) {
        PyErr_SetString(PyExc_ValueError, "bad port or queue");
        return NULL;
    }
    BurstObject *b;
    if (nargs > 3 && args[3] != Py_None) {
        if (!PyObject_TypeCheck(args[3], &BurstType)) {
            PyErr_SetString(PyExc_TypeError, "into must be a Burst");
            return NULL;
        }
        b = (BurstObject *)args[3];
        Py_INCREF(b);
    } else if (!(b = burst_new(n))) {
        return NULL;
    }
    burst_rx(b, (uint16_t)port, (uint16_t)queue, n > 0xffff ? 0xffff : (uint16_t)n);
    return (PyObject *)b;
}

/* tx_burst(port, queue, burst) -> sent. Unsent mbufs are FREED; the burst ends empty. */
static PyObject *m_tx_burst(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyObject_TypeCheck(args[2], &BurstType)) {
        PyErr_SetString(PyExc_TypeError, "tx_burst(port, queue, burst)");
        return NULL;
    }
    long port = PyLong_AsLong(args[0]);
    long queue = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (eal_state != 1 && need_eal())
        return NULL;
    if (port < 0 || port >= RTE_MAX_ETHPORTS || queue < 0 || queue > 65535) {
        PyErr_SetString(PyExc_ValueError, "bad port or queue");
        return NULL;
    }
    return PyLong_FromLong(burst_tx((BurstObject *)args[2], (uint16_t)port, (uint16_t)queue));
}

/* burst_from_frames(pool, frames) -> Burst: allocate mbufs and copy frames in (generators,
 * tests). */
static PyObject *m_burst_from_frames(PyObject *mod, PyObject *args)
{
    PyObject *pool, *frames;
    if (!PyArg_ParseTuple(args, "O!O", &MempoolType, &pool, &frames))
        return NULL;
    if (need_eal()) return NULL;
    PyObject *fast = PySequence_Fast(frames, "frames must be a sequence of bytes");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    BurstObject *b = burst_new(n ? n : 1);
    if (!b) {
        Py_DECREF(fast);
        return NULL;
    }
    if (n && rte_pktmbuf_alloc_bulk(((MempoolObject *)pool)->mp, b->pkts, (unsigned)n) < 0) {
        Py_DECREF(fast);
        Py_DECREF(b);
        return dpdk_err(ENOBUFS, "rte_pktmbuf_alloc_bulk(%zd)", n);
    }
    b->n = (uint16_t)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer v;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, i), &v, PyBUF_SIMPLE) < 0)
            goto fail;
        char *d = rte_pktmbuf_append(b->pkts[i], (uint16_t)v.len);
        if (!d || v.len > 65535) {
            PyBuffer_Release(&v);
            PyErr_Format(PyExc_ValueError, "frame %zd (%zd bytes) does not fit an mbuf", i, v.len);
            goto fail;
        }
        memcpy(d, v.buf, v.len);
        PyBuffer_Release(&v);
    }
    Py_DECREF(fast);
    return (PyObject *)b;
fail:
    Py_DECREF(fast);
    Py_DECREF(b);
    return NULL;
}

static PyObject *m_ring_create(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"name", "size", "single_producer", "single_consumer", NULL};
    const char *name;
    unsigned size;
    int sp = 0, sc = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sI|pp", kwl, &name, &size, &sp, &sc))
        return NULL;
    if (need_eal()) return NULL;
    unsigned flags = (sp ? RING_F_SP_ENQ : 0) | (sc ? RING_F_SC_DEQ : 0);
    struct rte_ring *r = rte_ring_create(name, size, (int)rte_socket_id(), flags);
    if (!r)
        return dpdk_err(rte_errno, "rte_ring_create(%s, %u)", name, size);
    RingObject *o = PyObject_New(RingObject, &RingType);
    if (o)
        o->r = r;
    return (PyObject *)o;
}

static PyObject *m_tsc_hz(PyObject *mod, PyObject *u)
{
    if (need_eal()) return NULL;
    return PyLong_FromUnsignedLongLong(rte_get_tsc_hz());
}

static PyObject *m_rdtsc(PyObject *mod, PyObject *u)
{
    return PyLong_FromUnsignedLongLong(rte_rdtsc());
}

static PyObject *acct_tuple(const struct acct *a)
{
    return Py_BuildValue("(KKK)", __atomic_load_n(&a->cycles, __ATOMIC_RELAXED),
                         __atomic_load_n(&a->packets, __ATOMIC_RELAXED),
                         __atomic_load_n(&a->bursts, __ATOMIC_RELAXED));
}

/* busy_counters() -> {(port, queue) or "ring": (cycles, packets, bursts)} (non-zero only) */
static PyObject *m_busy_counters(PyObject *mod, PyObject *u)
{
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int p = 0; p < RTE_MAX_ETHPORTS; p++)
        for (int q = 0; q < MAX_Q; q++)
            if (q_acct[p][q].bursts) {
                PyObject *k = Py_BuildValue("(ii)", p, q), *v = acct_tuple(&q_acct[p][q]);
                PyDict_SetItem(d, k, v);
                Py_XDECREF(k);
                Py_XDECREF(v);
            }
    if (ring_acct.bursts) {
        PyObject *v = acct_tuple(&ring_acct);
        PyDict_SetItemString(d, "ring", v);
        Py_XDECREF(v);
    }
    return d;
}

static PyObject *m_busy_reset(PyObject *mod, PyObject *u)
{
    memset(q_acct, 0, sizeof q_acct);
    memset(&ring_acct, 0, sizeof ring_acct);
    Py_RETURN_NONE;
}

/* io_forward(pairs, burst=32, seconds=1.0) with pairs = [(rx_port, rx_q, tx_port, tx_q)...]
 * polled round-robin on the calling thread, GIL released. Returns a dict of counts. */
static PyObject *m_io_forward(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"pairs", "burst", "seconds", NULL};
    PyObject *pairs;
    unsigned burst = 32;
    double seconds = 1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Id", kwl, &pairs, &burst, &seconds))
        return NULL;
    if (need_eal()) return NULL;
    if (burst < 1 || burst > 512) {
        PyErr_SetString(PyExc_ValueError, "burst must be 1..512");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(pairs, "pairs: list of (rx_port, rx_q, tx_port, tx_q)");
    if (!fast) return NULL;
    Py_ssize_t np = PySequence_Fast_GET_SIZE(fast);
    if (np < 1 || np > 16) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "1..16 pairs");
        return NULL;
    }
    uint16_t pr[16][4];
    for (Py_ssize_t i = 0; i < np; i++) {
        int a, b, c, d;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "iiii", &a, &b, &c, &d)) {
            Py_DECREF(fast);
            return NULL;
        }
        if (check_port(a) || check_port(c)) {
            Py_DECREF(fast);
            return NULL;
        }
        pr[i][0] = a; pr[i][1] = b; pr[i][2] = c; pr[i][3] = d;
    }
    Py_DECREF(fast);
    uint64_t rx = 0, tx = 0, polls = 0, busy = 0;
    uint64_t hz = rte_get_tsc_hz();
    uint64_t start, end;
    Py_BEGIN_ALLOW_THREADS
    struct rte_mbuf *pk[512];
    start = rte_rdtsc();
    uint64_t deadline = start + (uint64_t)(seconds * (double)hz);
    uint64_t now = start;
    while (now < deadline) {
        for (int it = 0; it < 64; it++) {
            for (Py_ssize_t i = 0; i < np; i++) {
                uint64_t t0 = rte_rdtsc();
                uint16_t n = rte_eth_rx_burst(pr[i][0], pr[i][1], pk, (uint16_t)burst);
                polls++;
                if (!n)
                    continue;
                uint16_t s = rte_eth_tx_burst(pr[i][2], pr[i][3], pk, n);
                if (s < n)
                    rte_pktmbuf_free_bulk(pk + s, n - s);
                rx += n;
                tx += s;
                busy += rte_rdtsc() - t0;
            }
        }
        now = rte_rdtsc();
    }
    end = now;
    Py_END_ALLOW_THREADS
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:d}", "rx", rx, "tx", tx, "dropped",
                         rx - tx, "polls", polls, "cycles", end - start, "busy_cycles", busy,
                         "seconds", (double)(end - start) / (double)hz);
}

/* gen_loop(port, pool, frames, queues=1, burst=32, seconds=1.0, counters=None) -> dict: a C
 * traffic generator for benchmarks (a DPDK process on the vhost side of the port under test).
 * Sends copies of `frames` (bytes, cycled; frame i always goes to tx queue i % queues, so a flow
 * stays on one queue) as fast as the port takes them, and drains (frees) whatever arrives on
 * the same queues, so it is also the sink. GIL released for `seconds`.
 * `counters`, a writable buffer of GEN_COUNTERS uint64 (shared memory, read by another
 * process while this runs): the running totals, stored after every few bursts, so that a
 * measurement can take them at the start and end of its own window (the returned dict covers
 * the whole run). Slots: tried, tx, rx, nomem, short (tx bursts the port took only part of,
 * or none: back-pressure, the peer is not draining its ring), bursts (tx bursts tried). */
#define GEN_STRIDE 2048
#define GEN_COUNTERS 6
static PyObject *m_gen_loop(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"port", "pool", "frames", "queues", "burst", "seconds", "counters",
                          NULL};
    long port;
    PyObject *pool, *frames, *counters = Py_None;
    unsigned nq = 1, burst = 32;
    double seconds = 1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "lO!O|IIdO", kwl, &port, &MempoolType, &pool,
                                     &frames, &nq, &burst, &seconds, &counters))
        return NULL;
    if (check_port(port))
        return NULL;
    if (burst < 1 || burst > 512 || nq < 1 || nq > MAX_Q) {
        PyErr_Format(PyExc_ValueError, "burst must be 1..512 and queues 1..%d", MAX_Q);
        return NULL;
    }
    Py_buffer live = {0};
    if (counters != Py_None) {
        if (PyObject_GetBuffer(counters, &live, PyBUF_WRITABLE) < 0)
            return NULL;
        if (live.len < (Py_ssize_t)(GEN_COUNTERS * sizeof(uint64_t)) ||
            ((uintptr_t)live.buf % sizeof(uint64_t)) != 0) {
            PyBuffer_Release(&live);
            PyErr_Format(PyExc_ValueError, "counters: an aligned buffer of %d uint64",
                         GEN_COUNTERS);
            return NULL;
        }
    }
    volatile uint64_t *cnt = live.buf;
    PyObject *fast = PySequence_Fast(frames, "frames must be a sequence of bytes");
    if (!fast) {
        if (cnt)
            PyBuffer_Release(&live);
        return NULL;
    }
    Py_ssize_t nf = PySequence_Fast_GET_SIZE(fast);
    if (nf < (Py_ssize_t)nq || nf > 65536) {
        Py_DECREF(fast);
        if (cnt)
            PyBuffer_Release(&live);
        PyErr_SetString(PyExc_ValueError, "need queues..65536 frames");
        return NULL;
    }
    uint8_t *data = PyMem_Malloc((size_t)nf * GEN_STRIDE);
    uint16_t *len = PyMem_Malloc((size_t)nf * sizeof *len);
    uint32_t *order = PyMem_Malloc((size_t)nf * sizeof *order);
    if (!data || !len || !order) {
        Py_DECREF(fast);
        PyMem_Free(data); PyMem_Free(len); PyMem_Free(order);
        if (cnt)
            PyBuffer_Release(&live);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        Py_buffer v;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, i), &v, PyBUF_SIMPLE) < 0 ||
            v.len < 14 || v.len > GEN_STRIDE) {
            if (!PyErr_Occurred()) {
                PyBuffer_Release(&v);
                PyErr_Format(PyExc_ValueError, "frame %zd: 14..%d bytes", i, GEN_STRIDE);
            }
            Py_DECREF(fast);
            PyMem_Free(data); PyMem_Free(len); PyMem_Free(order);
            if (cnt)
                PyBuffer_Release(&live);
            return NULL;
        }
        memcpy(data + (size_t)i * GEN_STRIDE, v.buf, v.len);
        len[i] = (uint16_t)v.len;
        PyBuffer_Release(&v);
    }
    Py_DECREF(fast);
    /* frames of queue q: order[first[q] .. first[q] + count[q]) */
    uint32_t first[MAX_Q], count[MAX_Q], cur[MAX_Q], w = 0;
    for (unsigned q = 0; q < nq; q++) {
        first[q] = w;
        for (Py_ssize_t i = q; i < nf; i += nq)
            order[w++] = (uint32_t)i;
        count[q] = w - first[q];
        cur[q] = 0;
    }
    struct rte_mempool *mp = ((MempoolObject *)pool)->mp;
    uint64_t tx = 0, rx = 0, tried = 0, nomem = 0, shortb = 0, bursts = 0, start, end;
    uint64_t hz = rte_get_tsc_hz();
    Py_BEGIN_ALLOW_THREADS
    struct rte_mbuf *pk[512];
    start = rte_rdtsc();
    uint64_t deadline = start + (uint64_t)(seconds * (double)hz), now = start;
    while (now < deadline) {
        for (int it = 0; it < 16; it++) {
            for (unsigned q = 0; q < nq; q++) {
                uint16_t n = rte_eth_rx_burst((uint16_t)port, (uint16_t)q, pk, (uint16_t)burst);
                if (n) {
                    rte_pktmbuf_free_bulk(pk, n);
                    rx += n;
                }
                if (rte_pktmbuf_alloc_bulk(mp, pk, burst) != 0) {
                    nomem++;
                    continue;
                }
                for (unsigned i = 0; i < burst; i++) {
                    uint32_t f = order[first[q] + cur[q]];
                    if (++cur[q] == count[q])
                        cur[q] = 0;
                    char *d = rte_pktmbuf_append(pk[i], len[f]);
                    memcpy(d, data + (size_t)f * GEN_STRIDE, len[f]);
                }
                uint16_t s = rte_eth_tx_burst((uint16_t)port, (uint16_t)q, pk, (uint16_t)burst);
                if (s < burst) {
                    rte_pktmbuf_free_bulk(pk + s, burst - s);
                    shortb++;
                }
                bursts++;
                tried += burst;
                tx += s;
            }
        }
        if (cnt) {  /* aligned 64-bit stores: a reader never sees a torn value */
            cnt[0] = tried; cnt[1] = tx; cnt[2] = rx;
            cnt[3] = nomem; cnt[4] = shortb; cnt[5] = bursts;
        }
        now = rte_rdtsc();
    }
    end = now;
    Py_END_ALLOW_THREADS
    PyMem_Free(data);
    PyMem_Free(len);
    PyMem_Free(order);
    if (cnt)
        PyBuffer_Release(&live);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:d}", "tx", tx, "rx", rx, "tried", tried,
                         "nomem", nomem, "short", shortb, "bursts", bursts, "seconds",
                         (double)(end - start) / (double)hz);
}

static PyObject *m_thread_register(PyObject *mod, PyObject *u)
{
    if (need_eal()) return NULL;
    if (rte_lcore_id() != LCORE_ID_ANY)
        return PyLong_FromUnsignedLong(rte_lcore_id());
    if (rte_thread_register() < 0)
        return dpdk_err(rte_errno, "rte_thread_register");
    return PyLong_FromUnsignedLong(rte_lcore_id());
}

static PyObject *m_thread_unregister(PyObject *mod, PyObject *u)
{
    if (eal_state == 1)
        rte_thread_unregister();
    Py_RETURN_NONE;
}

static PyObject *m_lcore_id(PyObject *mod, PyObject *u)
{
    unsigned id = rte_lcore_id();
    if (id == LCORE_ID_ANY)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(id);
}

static PyObject *m_parse_frame(PyObject *mod, PyObject *arg)
{
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0)
        return NULL;
    struct nf_parsed p;
    int r = nf_parse(v.buf, (uint32_t)v.len, &p);
    PyBuffer_Release(&v);
    return Py_BuildValue("{s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:I}", "reason", r,
                         "src_ip", p.src_ip, "dst_ip", p.dst_ip, "src_port", p.src_port,
                         "dst_port", p.dst_port, "proto", p.proto, "l3_offset", p.l3_offset,
                         "l4_offset", p.l4_offset, "vlan", p.vlan,
                         "hash", r == NF_OK ? nf_flow_hash(&p) : 0);
}

static PyMethodDef module_methods[] = {
    {"eal_init", m_eal_init, METH_O, "eal_init(args) -> consumed args; once per process"},
    {"eal_cleanup", m_eal_cleanup, METH_NOARGS, "stop+close all ports, rte_eal_cleanup()"},
    {"eal_state", m_eal_state, METH_NOARGS, "0 never initialised, 1 up, 2 cleaned up/failed"},
    {"pool_create", (PyCFunction)(void (*)(void))m_pool_create, METH_VARARGS | METH_KEYWORDS,
     "pool_create(name, n, cache=256, data_room=2176) -> Mempool"},
    {"dev_probe", m_dev_probe, METH_VARARGS, "dev_probe(devargs): rte_dev_probe"},
    {"port_by_name", m_port_by_name, METH_VARARGS, "port_by_name(name) -> port id"},
    {"port_count", m_port_count, METH_NOARGS, "rte_eth_dev_count_avail()"},
    {"port_setup", (PyCFunction)(void (*)(void))m_port_setup, METH_VARARGS | METH_KEYWORDS,
     "port_setup(port, pool, nrxq=1, ntxq=1, nrxd=1024, ntxd=1024)"},
    {"port_start", m_port_start, METH_VARARGS, "port_start(port, promisc=True)"},
    {"port_stop", m_port_stop, METH_VARARGS, "port_stop(port)"},
    {"port_close", m_port_close, METH_VARARGS, "port_close(port)"},
    {"port_mac", m_port_mac, METH_VARARGS, "port_mac(port) -> 6 bytes"},
    {"port_link", m_port_link, METH_VARARGS, "port_link(port) -> dict"},
    {"port_stats", m_port_stats, METH_VARARGS, "port_stats(port) -> dict (rte_eth_stats_get)"},
    {"port_stats_reset", m_port_stats_reset, METH_VARARGS, "port_stats_reset(port)"},
    {"rx_burst", (PyCFunction)(void (*)(void))m_rx_burst, METH_FASTCALL,
     "rx_burst(port, queue, n=32, into=None) -> Burst"},
    {"tx_burst", (PyCFunction)(void (*)(void))m_tx_burst, METH_FASTCALL,
     "tx_burst(port, queue, burst) -> sent; unsent mbufs are freed, burst ends empty"},
    {"burst_from_frames", m_burst_from_frames, METH_VARARGS,
     "burst_from_frames(pool, frames) -> Burst"},
    {"ring_create", (PyCFunction)(void (*)(void))m_ring_create, METH_VARARGS | METH_KEYWORDS,
     "ring_create(name, size, single_producer=False, single_consumer=False) -> Ring"},
    {"tsc_hz", m_tsc_hz, METH_NOARGS, "rte_get_tsc_hz()"},
    {"rdtsc", m_rdtsc, METH_NOARGS, "rte_rdtsc()"},
    {"busy_counters", m_busy_counters, METH_NOARGS,
     "{(port, queue) | 'ring': (busy_cycles, busy_packets, bursts)}"},
    {"busy_reset", m_busy_reset, METH_NOARGS, "zero the busy counters"},
    {"io_forward", (PyCFunction)(void (*)(void))m_io_forward, METH_VARARGS | METH_KEYWORDS,
     "io_forward(pairs, burst=32, seconds=1.0) -> dict; C loop, GIL released"},
    {"gen_loop", (PyCFunction)(void (*)(void))m_gen_loop, METH_VARARGS | METH_KEYWORDS,
     "gen_loop(port, pool, frames, queues=1, burst=32, seconds=1.0, counters=None) -> dict; "
     "C generator + sink for benchmarks, GIL released"},
    {"thread_register", m_thread_register, METH_NOARGS,
     "rte_thread_register() for the calling thread -> lcore id"},
    {"thread_unregister", m_thread_unregister, METH_NOARGS, "rte_thread_unregister()"},
    {"lcore_id", m_lcore_id, METH_NOARGS, "rte_lcore_id() or None"},
    {"parse_frame", m_parse_frame, METH_O, "parse_frame(bytes) -> dict (C parser, no EAL)"},
    {"use_reason_names", m_use_reason_names, METH_O,
     "use_reason_names(names): Burst.reason(i) returns names[code] (vnf.dpdk passes REASONS)"},
    {NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "vnf.dpdk._dpdk",
                                    "DPDK binding for vnflab (see vnf/dpdk/__init__.py)", -1,
                                    module_methods};

PyMODINIT_FUNC PyInit__dpdk(void)
{
    if (PyType_Ready(&MempoolType) < 0 || PyType_Ready(&BurstType) < 0 ||
        PyType_Ready(&RingType) < 0 || PyType_Ready(&FlowKernelType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    DpdkError = PyErr_NewException("vnf.dpdk.DpdkError", PyExc_OSError, NULL);
    Py_INCREF(DpdkError);
    PyModule_AddObject(m, "DpdkError", DpdkError);
    Py_INCREF(&MempoolType);
    PyModule_AddObject(m, "Mempool", (PyObject *)&MempoolType);
    Py_INCREF(&BurstType);
    PyModule_AddObject(m, "Burst", (PyObject *)&BurstType);
    Py_INCREF(&FlowKernelType);
    PyModule_AddObject(m, "FlowKernel", (PyObject *)&FlowKernelType);
    Py_INCREF(&RingType);
    PyModule_AddObject(m, "Ring", (PyObject *)&RingType);
    PyModule_AddIntConstant(m, "NF_REASON_COUNT", NF_REASON_COUNT);
    PyModule_AddIntConstant(m, "MAX_BURST", 4096);
    return m;
}
