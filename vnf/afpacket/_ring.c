#define _GNU_SOURCE   /* sendmmsg */
/*
 * _ring.c - the C half of the AF_PACKET (way 2) ring layer.
 *
 * Lecture picture: the kernel and this process share two rings of memory (mmap'ed once at
 * start, never re-allocated).
 *   RX: a TPACKET_V3 ring of *blocks*. The kernel fills a block with many variable-sized frames,
 *       then flips its block_status to TP_STATUS_USER. We walk the frames of that block here, in
 *       C, parse each one with nf.h, write the results into a pre-allocated numpy array (one
 *       fixed-size record per packet), and later flip the block back to TP_STATUS_KERNEL.
 *   TX: a ring of fixed-size *slots*. We copy a received frame into a free slot, rewrite its
 *       headers, mark it TP_STATUS_SEND_REQUEST, and after a whole batch one send() tells the
 *       kernel to transmit every marked slot: one system call for hundreds of packets.
 * Python keeps only what a student must see and decide: the flow-table lookup per packet.
 *
 * Plain CPython C API; arrays arrive through the buffer protocol, so no numpy headers.
 * The ownership handshake (status words) uses acquire/release atomics: the kernel writes the
 * frames and *then* the status, so we must read the status first and the frames after it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <linux/if_packet.h>
#include <sys/socket.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "nf.h"

/* One row of Batch.packets. vnf/afpacket/ring.py declares the same layout as a numpy
 * structured dtype and checks its itemsize against record_size() at import. */
struct ring_pkt {
    uint32_t offset;     /* where the frame starts, as an offset into the RX ring mmap */
    uint32_t length;     /* bytes of the frame present in the ring (tp_snaplen) */
    uint32_t src_ip;     /* host order, as in vnf.packet.FiveTuple */
    uint32_t dst_ip;
    uint16_t src_port;
    uint16_t dst_port;
    uint8_t proto;
    uint8_t reason;      /* enum nf_reason; 0 = parsed */
    uint8_t flags;       /* RING_PKT_* below */
    uint8_t pad;
    uint16_t l3_offset;  /* relative to the frame as stored in the ring (tag removed) */
    uint16_t l4_offset;
    int32_t vlan;        /* outer VLAN id, -1 none */
    uint32_t hash;       /* nf_flow_hash == vnf.hashing.flow_hash */
    uint16_t vlan_tci;   /* full TCI (priority bits too), to put the tag back on transmit */
    uint16_t vlan_tpid;  /* 0x8100 or 0x88a8 */
};

/* The kernel strips the outer VLAN tag before AF_PACKET sees the frame (it is in tp_vlan_tci);
 * we report it in .vlan and re-insert it when forwarding, so the wire sees the same frame. */
#define RING_PKT_VLAN 0x01
/* TP_STATUS_CSUMNOTREADY: the sender left the L4 checksum to "hardware" (veth keeps
 * CHECKSUM_PARTIAL). A frame we re-transmit from the TX ring gets no such help, so tx_fill
 * completes the checksum in software, as the NIC would have. */
#define RING_PKT_CSUM_PARTIAL 0x02

/* TX slot layout (TPACKET_V3 without PACKET_TX_HAS_OFF): header, then data at this offset. */
#define TX_DATA_OFFSET TPACKET_ALIGN(sizeof(struct tpacket3_hdr))

/* ------------------------------------------------------------------ buffer helpers */

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what)
{
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS
                                               : PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Format(PyExc_TypeError, "%s: need a contiguous%s buffer", what,
                     writable ? " writable" : "");
        return -1;
    }
    return 0;
}

static int check_records(Py_buffer *pkts, Py_ssize_t need)
{
    if (pkts->len < need * (Py_ssize_t)sizeof(struct ring_pkt)) {
        PyErr_SetString(PyExc_ValueError, "packet record array too small for this block");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ RX side */

static struct tpacket_block_desc *block_at(Py_buffer *ring, Py_ssize_t off)
{
    if (off < 0 || off + (Py_ssize_t)sizeof(struct tpacket_block_desc) > ring->len) {
        PyErr_SetString(PyExc_ValueError, "block offset outside the ring");
        return NULL;
    }
    return (struct tpacket_block_desc *)((uint8_t *)ring->buf + off);
}

PyDoc_STRVAR(block_ready_doc,
"block_ready(ring, block_offset) -> bool\n\n"
"True when the kernel has handed this block to user space (TP_STATUS_USER).");

static PyObject *block_ready(PyObject *self, PyObject *args)
{
    Py_buffer ring;
    Py_ssize_t off;
    if (!PyArg_ParseTuple(args, "w*n", &ring, &off))
        return NULL;
    struct tpacket_block_desc *bd = block_at(&ring, off);
    PyObject *res = NULL;
    if (bd) {
        uint32_t st = __atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE);
        res = PyBool_FromLong(st & TP_STATUS_USER);
    }
    PyBuffer_Release(&ring);
    return res;
}

PyDoc_STRVAR(release_block_doc,
"release_block(ring, block_offset)\n\n"
"Give the block back to the kernel (TP_STATUS_KERNEL). Every frame in it is invalid after.");

static PyObject *release_block(PyObject *self, PyObject *args)
{
    Py_buffer ring;
    Py_ssize_t off;
    if (!PyArg_ParseTuple(args, "w*n", &ring, &off))
        return NULL;
    struct tpacket_block_desc *bd = block_at(&ring, off);
    if (bd)  /* release: all our reads of the block happen before the kernel may refill it */
        __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    PyBuffer_Release(&ring);
    if (!bd)
        return NULL;
    Py_RETURN_NONE;
}

/* Walk one user-owned block. Fills rec[0..n) and returns n, or -1 if the block is still the
 * kernel's. Outgoing frames are skipped (belt and braces: the socket also sets
 * PACKET_IGNORE_OUTGOING), so the LB never re-reads what it transmitted. */
static Py_ssize_t walk_block(uint8_t *base, Py_ssize_t ring_len, Py_ssize_t block_off,
                             Py_ssize_t block_size, struct ring_pkt *rec, Py_ssize_t cap,
                             int do_parse)
{
    struct tpacket_block_desc *bd = (struct tpacket_block_desc *)(base + block_off);
    uint32_t st = __atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE);
    if (!(st & TP_STATUS_USER))
        return -1;
    uint32_t num = bd->hdr.bh1.num_pkts;
    uint32_t pos = bd->hdr.bh1.offset_to_first_pkt;
    Py_ssize_t n = 0;
    for (uint32_t k = 0; k < num && n < cap; k++) {
        if (pos + sizeof(struct tpacket3_hdr) > (uint64_t)block_size)
            break;  /* a corrupt chain must not walk us out of the block */
        struct tpacket3_hdr *h = (struct tpacket3_hdr *)(base + block_off + pos);
        const struct sockaddr_ll *sll =
            (const struct sockaddr_ll *)((uint8_t *)h + TPACKET_ALIGN(sizeof(*h)));
        uint32_t frame_off = pos + h->tp_mac;
        uint32_t len = h->tp_snaplen;
        if (frame_off + (uint64_t)len <= (uint64_t)block_size &&
            sll->sll_pkttype != PACKET_OUTGOING) {
            struct ring_pkt *r = &rec[n++];
            const uint8_t *frame = base + block_off + frame_off;
            r->offset = (uint32_t)(block_off + frame_off);
            r->length = len;
            r->flags = 0;
            r->pad = 0;
            r->vlan_tci = 0;
            r->vlan_tpid = 0;
            if (h->tp_status & TP_STATUS_VLAN_VALID) {
                r->flags |= RING_PKT_VLAN;
                r->vlan_tci = (uint16_t)h->hv1.tp_vlan_tci;
                r->vlan_tpid = (h->tp_status & TP_STATUS_VLAN_TPID_VALID) && h->hv1.tp_vlan_tpid
                                   ? h->hv1.tp_vlan_tpid : NF_ETH_P_8021Q;
            }
            if (h->tp_status & TP_STATUS_CSUMNOTREADY)
                r->flags |= RING_PKT_CSUM_PARTIAL;
            if (do_parse) {
                struct nf_parsed p;
                r->reason = (uint8_t)nf_parse(frame, len, &p);
                r->src_ip = p.src_ip;
                r->dst_ip = p.dst_ip;
                r->src_port = p.src_port;
                r->dst_port = p.dst_port;
                r->proto = p.proto;
                r->l3_offset = p.l3_offset;
                r->l4_offset = p.l4_offset;
                r->vlan = (r->flags & RING_PKT_VLAN) ? (int32_t)(r->vlan_tci & 0x0fff) : p.vlan;
                r->hash = r->reason == NF_OK ? nf_flow_hash(&p) : 0;
            }
        }
        if (h->tp_next_offset == 0)
            break;
        pos += h->tp_next_offset;
    }
    return n;
}

PyDoc_STRVAR(parse_block_doc,
"parse_block(ring, block_offset, block_size, packets, parse=True) -> n\n\n"
"Walk the tpacket3_hdr chain of one TP_STATUS_USER block and fill packets[0:n] (a buffer of\n"
"ring_pkt records: offset, length, 5-tuple, reason, offsets, vlan, hash). Returns -1 if the\n"
"block still belongs to the kernel. With parse=False only offset/length/flags are filled\n"
"(the 'plain Python' variant parses the frames itself).");

static PyObject *parse_block(PyObject *self, PyObject *args)
{
    Py_buffer ring, pkts;
    Py_ssize_t off, block_size;
    int do_parse = 1;
    if (!PyArg_ParseTuple(args, "w*nnw*|p", &ring, &off, &block_size, &pkts, &do_parse))
        return NULL;
    Py_ssize_t n = -2;
    if (block_size <= 0 || off < 0 || off + block_size > ring.len)
        PyErr_SetString(PyExc_ValueError, "block outside the ring");
    else
        n = walk_block(ring.buf, ring.len, off, block_size, pkts.buf,
                       pkts.len / (Py_ssize_t)sizeof(struct ring_pkt), do_parse);
    PyBuffer_Release(&ring);
    PyBuffer_Release(&pkts);
    if (n == -2)
        return NULL;
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(flows_doc,
"flows(packets, n, flow_type=None) -> list\n\n"
"One 5-tuple per packet (None where reason != 0), ready to be a dict key. flow_type may be a\n"
"tuple subclass such as vnf.packet.FiveTuple; its instances are built directly.");

/* This is where Python still allocates per packet, and what it costs (measured ~45-60 ns per
 * packet on this machine class, freeing included): one tuple (or FiveTuple) object, plus the int
 * objects for the two IPv4 addresses and any port >= 257 (CPython caches only -5..256). The
 * alternative -
 * keying the flow table on the 32-bit hash in a numpy array - avoids it but hides the flow from
 * the student, and the lab's contract is LoadBalancer.backend_for(FiveTuple). */
static PyObject *flows(PyObject *self, PyObject *args)
{
    Py_buffer pkts;
    Py_ssize_t n;
    PyObject *flow_type = Py_None;
    if (!PyArg_ParseTuple(args, "y*n|O", &pkts, &n, &flow_type))
        return NULL;
    PyTypeObject *tp = NULL;
    if (flow_type != Py_None) {
        if (!PyType_Check(flow_type) ||
            !PyType_IsSubtype((PyTypeObject *)flow_type, &PyTuple_Type) ||
            ((PyTypeObject *)flow_type)->tp_dictoffset != 0) {
            PyBuffer_Release(&pkts);
            PyErr_SetString(PyExc_TypeError, "flow_type must be a tuple subclass without __dict__ "
                                             "(a NamedTuple) or None");
            return NULL;
        }
        tp = (PyTypeObject *)flow_type;
    }
    if (n < 0 || check_records(&pkts, n) < 0) {
        PyBuffer_Release(&pkts);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "negative count");
        return NULL;
    }
    const struct ring_pkt *rec = pkts.buf;
    PyObject *list = PyList_New(n);
    if (!list)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        const struct ring_pkt *r = &rec[i];
        if (r->reason != NF_OK) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(list, i, Py_None);
            continue;
        }
        PyObject *t = tp ? tp->tp_alloc(tp, 5) : PyTuple_New(5);
        if (!t)
            goto fail;
        PyList_SET_ITEM(list, i, t);
        PyObject *v[5] = {PyLong_FromUnsignedLong(r->src_ip), PyLong_FromUnsignedLong(r->dst_ip),
                          PyLong_FromLong(r->src_port), PyLong_FromLong(r->dst_port),
                          PyLong_FromLong(r->proto)};
        for (int k = 0; k < 5; k++) {
            if (!v[k]) {
                for (int j = 0; j < 5; j++)
                    Py_XDECREF(v[j]);
                goto fail;
            }
        }
        for (int k = 0; k < 5; k++)
            PyTuple_SET_ITEM(t, k, v[k]);
        /* A tuple of ints cannot be part of a reference cycle, so the cycle collector need not
         * watch it. CPython untracks plain tuples like this lazily, but never instances of a
         * subclass such as FiveTuple: those survive into the old generations and make full
         * collections frequent (measured: ~300 ns/packet with a large heap instead of ~55). */
        if (tp && PyObject_IS_GC(t))
            PyObject_GC_UnTrack(t);
    }
    PyBuffer_Release(&pkts);
    return list;
fail:
    Py_XDECREF(list);
    PyBuffer_Release(&pkts);
    return NULL;
}

/* ------------------------------------------------------------------ TX side */

/* Finish a CHECKSUM_PARTIAL L4 checksum the way a NIC does: the field already holds the
 * pseudo-header sum; add every byte from the L4 header to the end of the IP packet, fold,
 * complement, store. */
static void complete_l4_checksum(uint8_t *frame, const struct nf_parsed *p)
{
    const uint8_t *ip = frame + p->l3_offset;
    uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
    uint32_t l4_len = nf_rd16(ip + 2) - ihl;
    uint8_t *l4 = frame + p->l4_offset;
    uint64_t sum = 0;
    uint32_t i = 0;
    for (; i + 1 < l4_len; i += 2)
        sum += (uint32_t)((l4[i] << 8) | l4[i + 1]);
    if (i < l4_len)
        sum += (uint32_t)(l4[i] << 8);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    uint16_t csum = (uint16_t)~sum;
    if (p->proto == NF_IPPROTO_UDP && csum == 0)
        csum = 0xffff;
    nf_wr16(l4 + (p->proto == NF_IPPROTO_TCP ? 16 : 6), csum);
}

struct choice_source {
    PyObject *fast;   /* list/tuple from PySequence_Fast, or NULL */
    Py_buffer buf;    /* int32 buffer otherwise */
    int has_buf;
};

static int choice_at(struct choice_source *c, Py_ssize_t i, long *out)
{
    if (c->has_buf) {
        *out = ((const int32_t *)c->buf.buf)[i];
        return 0;
    }
    PyObject *o = PySequence_Fast_GET_ITEM(c->fast, i);
    if (o == Py_None) {
        *out = -1;
        return 0;
    }
    *out = PyLong_AsLong(o);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* The choices argument of tx_fill/tx_sendmmsg (an int32 buffer or a sequence of ints/None, n
 * items), after checking the NAT tables cover every backend. Release with close_choices. */
static int open_choices(PyObject *obj, Py_ssize_t n, int nat, const Py_buffer *nat_ips,
                        const Py_buffer *nat_ports, Py_ssize_t nbackends,
                        struct choice_source *c)
{
    if (nat && (nat_ips->len / 4 < nbackends || nat_ports->len / 2 < nbackends)) {
        PyErr_SetString(PyExc_ValueError, "nat_ips (uint32) / nat_ports (uint16) shorter than "
                                          "dst_macs");
        return -1;
    }
    if (PyObject_CheckBuffer(obj)) {
        if (PyObject_GetBuffer(obj, &c->buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            return -1;
        c->has_buf = 1;
        if (c->buf.itemsize != 4 || c->buf.len / 4 < n) {
            PyErr_SetString(PyExc_ValueError, "choices buffer must be int32 with n items");
            return -1;
        }
        return 0;
    }
    c->fast = PySequence_Fast(obj, "choices must be a sequence of ints");
    if (!c->fast)
        return -1;
    if (PySequence_Fast_GET_SIZE(c->fast) < n) {
        PyErr_SetString(PyExc_ValueError, "fewer choices than packets");
        return -1;
    }
    return 0;
}

static void close_choices(struct choice_source *c)
{
    if (c->has_buf)
        PyBuffer_Release(&c->buf);
    c->has_buf = 0;
    Py_CLEAR(c->fast);
}

/* What tx_fill and tx_sendmmsg share: where each packet goes and how its frame is rewritten.
 * The callers parse src_mac and dst_macs into it ("y*"); open_plan takes the rest. */
struct tx_plan {
    Py_buffer src_mac, dst_macs, nat_ips, nat_ports;
    int nat;
    Py_ssize_t nbackends;
    struct choice_source ch;
};

static int open_plan(struct tx_plan *t, Py_ssize_t n, PyObject *choices, PyObject *nat_ips,
                     PyObject *nat_ports)
{
    t->nat = nat_ips != Py_None;
    if (t->nat && (get_buffer(nat_ips, &t->nat_ips, 0, "nat_ips") < 0 ||
                   get_buffer(nat_ports, &t->nat_ports, 0, "nat_ports") < 0))
        return -1;
    if (t->src_mac.len != 6) {
        PyErr_SetString(PyExc_ValueError, "src_mac must be 6 bytes");
        return -1;
    }
    t->nbackends = t->dst_macs.len / 6;
    return open_choices(choices, n, t->nat, &t->nat_ips, &t->nat_ports, t->nbackends, &t->ch);
}

static void close_plan(struct tx_plan *t)
{
    close_choices(&t->ch);
    PyBuffer_Release(&t->src_mac);
    PyBuffer_Release(&t->dst_macs);
    if (t->nat_ips.obj)
        PyBuffer_Release(&t->nat_ips);
    if (t->nat_ports.obj)
        PyBuffer_Release(&t->nat_ports);
}

/* The backend packet i goes to, or -1 when it is not sent (no backend, not a clean parse, not
 * inside the RX ring). Returns -1 with a Python error set if a choice is not an int. */
static int plan_backend(struct tx_plan *t, const struct ring_pkt *r, Py_ssize_t i,
                        Py_ssize_t rx_len, long *b)
{
    if (choice_at(&t->ch, i, b) < 0)
        return -1;
    if (*b < 0 || *b >= t->nbackends || r->reason != NF_OK || r->length < 12 ||
        (uint64_t)r->offset + r->length > (uint64_t)rx_len)
        *b = -1;
    return 0;
}

/* Rewrite a frame for backend b: both MACs, a CHECKSUM_PARTIAL checksum completed (the kernel
 * left it to the NIC that a veth does not have), and with NAT the destination IP/port. */
static void rewrite_frame(const struct tx_plan *t, uint8_t *frame, uint32_t len,
                          uint32_t pkt_flags, long b)
{
    nf_set_macs(frame, (const uint8_t *)t->dst_macs.buf + 6 * b, t->src_mac.buf);
    if (t->nat || (pkt_flags & RING_PKT_CSUM_PARTIAL)) {
        struct nf_parsed p;
        if (nf_parse(frame, len, &p) == NF_OK) {
            if (pkt_flags & RING_PKT_CSUM_PARTIAL)
                complete_l4_checksum(frame, &p);
            if (t->nat) {
                uint16_t port = ((const uint16_t *)t->nat_ports.buf)[b];
                nf_nat_dst(frame, &p, ((const uint32_t *)t->nat_ips.buf)[b],
                           port ? port : p.dst_port);
            }
        }
    }
}

PyDoc_STRVAR(tx_fill_doc,
"tx_fill(tx_ring, frame_size, frame_count, slot, rx_ring, packets, n, start, choices,\n"
"        src_mac, dst_macs, nat_ips=None, nat_ports=None) -> (next_i, next_slot, sent, dropped)\n\n"
"For packets[start:n]: choices[i] is a backend index (or -1/None: drop). Copy the frame from\n"
"the RX ring into the next free TX slot, put back a stripped VLAN tag, complete a\n"
"CHECKSUM_PARTIAL checksum, set the MACs (dst = dst_macs[6*b:6*b+6], src = src_mac) and, if\n"
"nat_ips is given, rewrite dst ip/port to nat_ips[b]/nat_ports[b] (port 0 keeps the port).\n"
"Marks each slot TP_STATUS_SEND_REQUEST; the caller kicks with one send(). Stops early when\n"
"the next slot is still owned by the kernel; next_i says where to resume.");

static PyObject *tx_fill(PyObject *self, PyObject *args)
{
    Py_buffer tx = {0}, rx = {0}, pkts = {0};
    Py_ssize_t frame_size, frame_count, slot, n, start;
    PyObject *choices_obj, *nat_ips_obj = Py_None, *nat_ports_obj = Py_None;
    struct tx_plan plan = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "w*nnnw*y*nnOy*y*|OO", &tx, &frame_size, &frame_count, &slot,
                          &rx, &pkts, &n, &start, &choices_obj, &plan.src_mac, &plan.dst_macs,
                          &nat_ips_obj, &nat_ports_obj))
        return NULL;
    if (frame_size <= (Py_ssize_t)TX_DATA_OFFSET || frame_count <= 0 ||
        frame_size * frame_count > tx.len || slot < 0 || slot >= frame_count) {
        PyErr_SetString(PyExc_ValueError, "TX ring geometry does not match the buffer");
        goto out;
    }
    if (n < 0 || start < 0 || start > n || check_records(&pkts, n) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "bad packet count or start");
        goto out;
    }
    if (open_plan(&plan, n, choices_obj, nat_ips_obj, nat_ports_obj) < 0)
        goto out;

    const struct ring_pkt *rec = pkts.buf;
    const uint8_t *rxbase = rx.buf;
    uint8_t *txbase = tx.buf;
    const uint32_t room = (uint32_t)(frame_size - TX_DATA_OFFSET);
    Py_ssize_t sent = 0, dropped = 0, i = start;
    for (; i < n; i++) {
        const struct ring_pkt *r = &rec[i];
        long b;
        if (plan_backend(&plan, r, i, rx.len, &b) < 0)
            goto out;
        int has_tag = (r->flags & RING_PKT_VLAN) != 0;
        uint32_t out_len = r->length + (has_tag ? 4 : 0);
        if (b < 0 || out_len > room) {
            dropped++;
            continue;
        }
        struct tpacket3_hdr *h = (struct tpacket3_hdr *)(txbase + slot * frame_size);
        if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE)
            break;  /* ring full: the kernel has not finished with this slot yet */
        uint8_t *dst = (uint8_t *)h + TX_DATA_OFFSET;
        const uint8_t *src = rxbase + r->offset;
        if (has_tag) {  /* dst mac, src mac, [TPID TCI], ethertype + rest */
            memcpy(dst, src, 12);
            nf_wr16(dst + 12, r->vlan_tpid);
            nf_wr16(dst + 14, r->vlan_tci);
            memcpy(dst + 16, src + 12, r->length - 12);
        } else {
            memcpy(dst, src, r->length);
        }
        rewrite_frame(&plan, dst, out_len, r->flags, b);   /* re-parses: a tag shifts offsets */
        h->tp_len = out_len;
        h->tp_snaplen = out_len;
        h->tp_next_offset = 0;  /* V3 TX: fixed-size slots only (the kernel rejects others) */
        /* release: the frame bytes are visible before the kernel sees SEND_REQUEST */
        __atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
        sent++;
        slot = slot + 1 == frame_count ? 0 : slot + 1;
    }
    result = Py_BuildValue("nnnn", i, slot, sent, dropped);
out:
    close_plan(&plan);
    PyBuffer_Release(&tx);
    PyBuffer_Release(&rx);
    PyBuffer_Release(&pkts);
    return result;
}

PyDoc_STRVAR(tx_sendmmsg_doc,
"tx_sendmmsg(fd, rx_ring, packets, n, choices, src_mac, dst_macs, nat_ips=None, nat_ports=None,\n"
"            chunk=0) -> (sent, dropped)\n\n"
"tx_fill's job without a TX ring: rewrite each chosen frame IN PLACE in the RX ring (MACs,\n"
"CHECKSUM_PARTIAL completion, NAT as tx_fill) and hand them to the kernel with sendmmsg(2),\n"
"iovecs pointing into the RX ring (a stripped VLAN tag goes back as a 4-byte iovec). One\n"
"system call per `chunk` packets (0: up to 256). The kernel copies each frame once into a\n"
"linear skb. fd: an AF_PACKET socket bound to the interface. Call before the RX block is\n"
"released (the frames live there).");

#define MMSG_MAX 256

static PyObject *tx_sendmmsg(PyObject *self, PyObject *args)
{
    Py_buffer rx = {0}, pkts = {0};
    int fd;
    Py_ssize_t n, chunk = 0;
    PyObject *choices_obj, *nat_ips_obj = Py_None, *nat_ports_obj = Py_None;
    struct tx_plan plan = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "iw*y*nOy*y*|OOn", &fd, &rx, &pkts, &n, &choices_obj,
                          &plan.src_mac, &plan.dst_macs, &nat_ips_obj, &nat_ports_obj, &chunk))
        return NULL;
    if (n < 0 || check_records(&pkts, n) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "bad packet count");
        goto out;
    }
    if (chunk <= 0 || chunk > MMSG_MAX)
        chunk = MMSG_MAX;
    if (open_plan(&plan, n, choices_obj, nat_ips_obj, nat_ports_obj) < 0)
        goto out;
    /* Static: no allocation per call. Safe because the GIL is held throughout (no other thread
     * can enter) and the LB's workers are processes, each with its own copy. */
    static struct mmsghdr msgs[MMSG_MAX];
    static struct iovec iov[MMSG_MAX][3];
    static uint8_t tags[MMSG_MAX][4];
    const struct ring_pkt *rec = pkts.buf;
    uint8_t *rxbase = rx.buf;
    Py_ssize_t sent = 0, dropped = 0, m = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (i < n) {
            const struct ring_pkt *r = &rec[i];
            long b;
            if (plan_backend(&plan, r, i, rx.len, &b) < 0)
                goto out;
            if (b < 0) {
                dropped++;
                continue;
            }
            uint8_t *frame = rxbase + r->offset;
            rewrite_frame(&plan, frame, r->length, r->flags, b);   /* in place: no tag here */
            struct msghdr *h = &msgs[m].msg_hdr;
            memset(h, 0, sizeof(*h));
            h->msg_iov = iov[m];
            if (r->flags & RING_PKT_VLAN) {   /* dst mac, src mac, [TPID TCI], the rest */
                nf_wr16(tags[m], r->vlan_tpid);
                nf_wr16(tags[m] + 2, r->vlan_tci);
                iov[m][0] = (struct iovec){frame, 12};
                iov[m][1] = (struct iovec){tags[m], 4};
                iov[m][2] = (struct iovec){frame + 12, r->length - 12};
                h->msg_iovlen = 3;
            } else {
                iov[m][0] = (struct iovec){frame, r->length};
                h->msg_iovlen = 1;
            }
            m++;
        }
        if (m && (m == chunk || i == n)) {
            int done = 0;
            while (done < m) {
                int k = sendmmsg(fd, msgs + done, (unsigned)(m - done), MSG_DONTWAIT);
                if (k <= 0)
                    break;              /* EAGAIN/ENOBUFS (device busy) or an error: drop */
                done += k;
            }
            sent += done;
            dropped += m - done;
            m = 0;
        }
    }
    result = Py_BuildValue("nn", sent, dropped);
out:
    close_plan(&plan);
    PyBuffer_Release(&rx);
    PyBuffer_Release(&pkts);
    return result;
}

PyDoc_STRVAR(tx_pending_doc,
"tx_pending(tx_ring, frame_size, frame_count) -> int\n\n"
"How many TX slots the kernel has not given back yet (status != TP_STATUS_AVAILABLE).");

static PyObject *tx_pending(PyObject *self, PyObject *args)
{
    Py_buffer tx;
    Py_ssize_t frame_size, frame_count, busy = 0;
    if (!PyArg_ParseTuple(args, "w*nn", &tx, &frame_size, &frame_count))
        return NULL;
    if (frame_size * frame_count > tx.len) {
        PyBuffer_Release(&tx);
        PyErr_SetString(PyExc_ValueError, "TX ring geometry does not match the buffer");
        return NULL;
    }
    for (Py_ssize_t s = 0; s < frame_count; s++) {
        struct tpacket3_hdr *h = (struct tpacket3_hdr *)((uint8_t *)tx.buf + s * frame_size);
        busy += __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE;
    }
    PyBuffer_Release(&tx);
    return PyLong_FromSsize_t(busy);
}

/* ------------------------------------------------------------------ module */

PyDoc_STRVAR(paced_send_doc,
"paced_send(fd, frames, frame_len, rate_pps, seconds, batch=8) -> sent\n\n"
"Send the frames of `frames` (back to back, `frame_len` bytes each, cycled) at a steady\n"
"`rate_pps` for `seconds`: one sendmmsg of `batch` frames every batch/rate seconds, sleeping\n"
"between (busy-waiting only the last 50 us). A generator for paced load: trafgen's --rate\n"
"sends each second's packets in one line-rate burst, which overflows small receive queues\n"
"at any average rate. After a stall it resumes at the rate, without a catch-up burst.\n"
"Returns when the time is up or a signal handler raises (SIGINT stops it early).");

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static PyObject *paced_send(PyObject *self, PyObject *args)
{
    int fd;
    Py_buffer frames;
    Py_ssize_t frame_len, batch = 8;
    double rate, seconds;
    if (!PyArg_ParseTuple(args, "iy*ndd|n", &fd, &frames, &frame_len, &rate, &seconds, &batch))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t count = frame_len > 0 ? frames.len / frame_len : 0;
    if (count < 1 || rate <= 0 || seconds < 0 || batch < 1 || batch > MMSG_MAX) {
        PyErr_SetString(PyExc_ValueError, "need >= 1 frame, rate > 0, seconds >= 0, "
                                          "1 <= batch <= 256");
        goto out;
    }
    struct mmsghdr msgs[MMSG_MAX];
    struct iovec iov[MMSG_MAX];
    const int64_t interval = (int64_t)(1e9 * (double)batch / rate);
    const int64_t end = mono_ns() + (int64_t)(seconds * 1e9);
    int64_t next = mono_ns();
    Py_ssize_t k = 0, sent = 0;
    for (unsigned rounds = 1;; rounds++) {
        int64_t now = mono_ns();
        if (now >= end)
            break;
        if (next - now > 50000) {                 /* sleep, leaving the last 50 us to spin */
            int64_t d = next - now - 50000;
            struct timespec ts = {d / 1000000000, d % 1000000000};
            Py_BEGIN_ALLOW_THREADS
            nanosleep(&ts, NULL);
            Py_END_ALLOW_THREADS
        }
        while ((now = mono_ns()) < next)
            ;
        if (now - next > 4 * interval)           /* fell behind: no catch-up burst */
            next = now;
        for (Py_ssize_t j = 0; j < batch; j++) {
            iov[j] = (struct iovec){(uint8_t *)frames.buf + k * frame_len, (size_t)frame_len};
            memset(&msgs[j], 0, sizeof(msgs[j]));
            msgs[j].msg_hdr.msg_iov = &iov[j];
            msgs[j].msg_hdr.msg_iovlen = 1;
            k = k + 1 == count ? 0 : k + 1;
        }
        int m = sendmmsg(fd, msgs, (unsigned)batch, MSG_DONTWAIT);
        if (m > 0)
            sent += m;
        next += interval;
        if ((rounds & 0x3FF) == 0 && PyErr_CheckSignals() < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
                goto out;
            PyErr_Clear();                        /* SIGINT: stop, report what was sent */
            break;
        }
    }
    result = PyLong_FromSsize_t(sent);
out:
    PyBuffer_Release(&frames);
    return result;
}

static PyMethodDef methods[] = {
    {"block_ready", block_ready, METH_VARARGS, block_ready_doc},
    {"release_block", release_block, METH_VARARGS, release_block_doc},
    {"parse_block", parse_block, METH_VARARGS, parse_block_doc},
    {"flows", flows, METH_VARARGS, flows_doc},
    {"tx_fill", tx_fill, METH_VARARGS, tx_fill_doc},
    {"tx_sendmmsg", tx_sendmmsg, METH_VARARGS, tx_sendmmsg_doc},
    {"tx_pending", tx_pending, METH_VARARGS, tx_pending_doc},
    {"paced_send", paced_send, METH_VARARGS, paced_send_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vnf.afpacket._ring",
    "C helpers for the TPACKET_V3 rings of way 2 (see vnf/afpacket/ring.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__ring(void)
{
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    static const char *reason_names[NF_REASON_COUNT] = {
        /* the strings of vnf.packet.DropReason; index 0 = parsed */
        "ok", "truncated-ethernet", "arp", "ipv6", "other-ethertype", "truncated-ip",
        "bad-ip-version", "bad-ihl", "bad-ip-length", "fragment", "unsupported-proto",
        "truncated-l4", "bad-tcp-offset", "bad-udp-length",
    };
    PyObject *names = PyTuple_New(NF_REASON_COUNT);
    if (!names)
        goto fail;
    for (int k = 0; k < NF_REASON_COUNT; k++) {
        PyObject *s = PyUnicode_FromString(reason_names[k]);
        if (!s) {
            Py_DECREF(names);
            goto fail;
        }
        PyTuple_SET_ITEM(names, k, s);
    }
    if (PyModule_AddObject(m, "REASON_NAMES", names) < 0) {
        Py_DECREF(names);
        goto fail;
    }
    if (PyModule_AddIntConstant(m, "RECORD_SIZE", sizeof(struct ring_pkt)) < 0 ||
        PyModule_AddIntConstant(m, "TX_DATA_OFFSET", TX_DATA_OFFSET) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_VLAN", RING_PKT_VLAN) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_CSUM_PARTIAL", RING_PKT_CSUM_PARTIAL) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
