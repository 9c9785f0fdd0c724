"""The grader's mutation corpus: realistic student bugs, made from the reference by small named
edits (as the release makes the starters), so it never goes stale: an edit whose text is no
longer in the reference fails loudly (``build``).

Each mutant names the test that must catch it (lose points there). ``vnflab grade-mutants --lab
N`` grades them all and prints the caught fraction and which test caught each (``grader.mutants``);
``tests/test_grader_mutants.py`` runs a representative subset. The fixtures of ``make.py``
(today's self-test) are not repeated here.
"""

from __future__ import annotations

import os

from tests.grader_fixtures.make import LAB_FILES, REPO


class Mutant:
    def __init__(self, lab: int, test: str, why: str, edits: dict[str, list[tuple[str, str]]]):
        self.lab, self.test, self.why, self.edits = lab, test, why, edits


M = Mutant
MUTANTS: dict[str, Mutant] = {
    # --- lab 1: flowtable.py, socket_lb.py ---------------------------------------------------
    "l1_evict_newest": M(
        1,
        "unit",
        "eviction pops the most recent entry, not the LRU one",
        {"flowtable.py": [("entries.popitem(last=False)", "entries.popitem(last=True)")]},
    ),
    "l1_capacity_off_by_one": M(
        1,
        "unit",
        "off by one: the table holds capacity + 1 entries",
        {
            "flowtable.py": [
                ("if len(entries) >= self.capacity:", "if len(entries) > self.capacity:")
            ]
        },
    ),
    "l1_no_refresh": M(
        1,
        "unit",
        "a hit does not refresh last_seen: busy flows expire",
        {"flowtable.py": [("        entry[1] = now\n", "")]},
    ),
    "l1_timeout_inverted": M(
        1,
        "unit",
        "expiry test inverted (< for >)",
        {
            "flowtable.py": [
                (
                    "        if now - entry[1] > self.idle_timeout:",
                    "        if now - entry[1] < self.idle_timeout:",
                )
            ]
        },
    ),
    "l1_sweep_everything": M(
        1,
        "unit",
        "the expiry sweep never stops at a live entry",
        {
            "flowtable.py": [
                (
                    "            if now - last_seen <= self.idle_timeout:\n                break\n",
                    "",
                )
            ]
        },
    ),
    "l1_list_scan_table": M(
        1,
        "cost",
        "O(n) flow table: a scan over every entry per lookup",
        {
            "flowtable.py": [
                (
                    "        entry = self._entries.get(key)\n",
                    "        entry = next((v for k, v in self._entries.items() if k == key),"
                    " None)\n",
                )
            ]
        },
    ),
    "l1_socket_per_datagram": M(
        1,
        "cost",
        "a new upstream socket for every datagram",
        {
            "socket_lb.py": [
                (
                    "            upstream = self.udp_upstream.get((client, backend.name))\n",
                    "            upstream = None\n",
                )
            ]
        },
    ),
    "l1_reply_from_own_port": M(
        1,
        "correctness",
        "replies leave from a new socket (the LB's address and an ephemeral port), not VIP:8080",
        {
            "socket_lb.py": [
                (
                    "            self.udp_front.sendto(data, client)  # the reply leaves from VIP:port\n",
                    "            reply = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                    "            reply.sendto(data, client)\n"
                    "            reply.close()\n",
                )
            ]
        },
    ),
    "l1_key_fields_swapped": M(
        1,
        "key",
        "the 5-tuple built with source and destination swapped",
        {
            "socket_lb.py": [
                (
                    "FiveTuple(ip_to_int(client[0]), self.vip_int, client[1],"
                    " self.config.port,"
                    " UDP)",
                    "FiveTuple(self.vip_int, ip_to_int(client[0]), self.config.port,"
                    " client[1],"
                    " UDP)",
                )
            ]
        },
    ),
    "l1_replies_dropped": M(
        1,
        "correctness",
        "the reply path reads replies and never sends them",
        {
            "socket_lb.py": [
                (
                    "            self.udp_front.sendto(data, client)  # the reply leaves from VIP:port\n",
                    "",
                )
            ]
        },
    ),
    # --- lab 2: packet.py, afpacket_lb.py ----------------------------------------------------
    "l1_stateless": M(
        1,
        "pool_changes",
        "no flow table: Maglev for every datagram (keeps affinity while the pool stays put)",
        {
            "socket_lb.py": [
                (
                    "backend = self.lb.backend_for(flow, now)  # THE decision, shared by all ways",
                    "backend = self.lb.pool.choose(flow)  # no flow table: the pool every time",
                )
            ]
        },
    ),
    "l2_vlan_offset_forgotten": M(
        2,
        "unit",
        "the 802.1Q tag is read but l3 is not moved past it",
        {
            "packet.py": [
                (
                    "        vlan = tci & 0x0FFF\n        l3 += VLAN_TAG_LEN\n",
                    "        vlan = tci & 0x0FFF\n",
                )
            ]
        },
    ),
    "l2_inner_vlan_id": M(
        2,
        "unit",
        "QinQ: the VLAN id of the inner tag, not the outer one",
        {
            "packet.py": [
                (
                    "            ethertype = _U16.unpack_from(frame, l3 + 2)[0]\n",
                    "            ethertype = _U16.unpack_from(frame, l3 + 2)[0]\n"
                    "            vlan = _U16.unpack_from(frame, l3)[0] & 0x0FFF\n",
                )
            ]
        },
    ),
    "l2_l4_offset_ignores_options": M(
        2,
        "unit",
        "l4 offset assumes a 20-byte IP header",
        {"packet.py": [("    l4 = l3 + ihl\n", "    l4 = l3 + IPV4_MIN_HEADER_LEN\n")]},
    ),
    "l2_no_protocol_check": M(
        2,
        "unit",
        "no protocol check: anything not TCP is parsed as UDP",
        {
            "packet.py": [
                ("    elif proto == IPPROTO_UDP:\n", "    else:\n"),
                ("    else:\n        return _DROPPED[DropReason.UNSUPPORTED_PROTO]\n", ""),
            ]
        },
    ),
    "l2_send_per_packet": M(
        2,
        "cost",
        "no batching: one send() kick per frame",
        {
            "afpacket_lb.py": [
                (
                    "            self.rewrite,  # one send() kick\n"
                    "            kick_every=self.kick_every,\n",
                    "            self.rewrite,\n            kick_every=1,\n",
                )
            ]
        },
    ),
    "l2_python_parse_loop": M(
        2,
        "cost",
        "a plain-Python loop: parse_frame on every frame",
        {
            "afpacket_lb.py": [
                (
                    "from vnf.afpacket.ring import DROP\n",
                    "from vnf.afpacket.ring import DROP\nfrom vnf.packet import parse_frame\n",
                ),
                (
                    "for i, flow in enumerate(batch.flows()):",
                    "for i, flow in enumerate([parse_frame(f).flow for f in batch.frames()]):",
                ),
            ]
        },
    ),
    "l2_choices_skip_drops": M(
        2,
        "correctness",
        "no DROP appended for an unparsed frame: the "
        "choices after it are shifted onto the wrong frames",
        {
            "afpacket_lb.py": [
                (
                    "            if flow is None:  # counted per reason below\n"
                    "                choices.append(DROP)\n",
                    "            if flow is None:  # counted per reason below\n                pass\n",
                )
            ]
        },
    ),
    "l2_nat_no_replies": M(
        2,
        "paths",
        "NAT: replies queued but never sent back",
        {
            "afpacket_lb.py": [
                ("            sent += self.nat.send_replies(tx)\n", "            pass\n")
            ]
        },
    ),
    "l2_nat_no_learning": M(
        2,
        "paths",
        "NAT: clients never learnt, so replies have nowhere to go",
        {
            "afpacket_lb.py": [
                (
                    "                if self.nat:\n                   "
                    " self.nat.learn_client(flow,"
                    " batch.frame(i))\n",
                    "",
                )
            ]
        },
    ),
    "l2_no_service_check": M(
        2,
        "paths",
        "every parsed flow balanced (no VIP check): NAT replies "
        "from the backends are balanced again instead of returned",
        {
            "afpacket_lb.py": [
                ("            elif lb.is_for_service(flow):", "            elif True:")
            ]
        },
    ),
    "l2_backend_index_off_by_one": M(
        2,
        "key",
        "the backend's index off by one (1-based): every flow consistently on the next backend",
        {
            "afpacket_lb.py": [
                (
                    "choices.append(DROP if backend is None else index[backend.name])",
                    "choices.append(DROP if backend is None else "
                    "(index[backend.name] + 1) % len(index))",
                )
            ]
        },
    ),
    # --- lab 3: dpdk_lb.py -------------------------------------------------------------------
    "l2_stateless": M(
        2,
        "pool_changes",
        "no flow table: Maglev for every packet (keeps affinity while the pool stays put)",
        {
            "afpacket_lb.py": [
                (
                    "backend = lb.backend_for(flow, now)  # THE decision, shared by all ways",
                    "backend = lb.pool.choose(flow)  # no flow table: the pool every time",
                )
            ]
        },
    ),
    "l3_vector_python_loop": M(
        3,
        "cost",
        "the vector path loops in Python over the packets",
        {
            "dpdk_lb.py": [
                (
                    "        forwarded = lb.forwarded\n        n = burst.parse(arrays)",
                    "        return self.forward_perpacket(burst, lb, arrays, txq, now)\n"
                    "        forwarded = lb.forwarded\n        n = burst.parse(arrays)",
                )
            ]
        },
    ),
    "l3_stateless": M(
        3,
        "pool_changes",
        "no flow table: a per-packet loop asking Maglev for every packet",
        {
            "dpdk_lb.py": [
                (
                    "        forwarded = lb.forwarded\n        n = burst.parse(arrays)",
                    "        return self.forward_perpacket(burst, lb, arrays, txq, now)\n"
                    "        forwarded = lb.forwarded\n        n = burst.parse(arrays)",
                ),
                (
                    "backend = lb.backend_for(flow, now)  # THE decision, shared by all ways",
                    "backend = lb.pool.choose(flow)  # no flow table: the pool every time",
                ),
            ]
        },
    ),
    "l3_perpacket_macs_swapped": M(
        3,
        "paths",
        "per-packet: source and destination MAC swapped",
        {
            "dpdk_lb.py": [
                (
                    "burst.set_macs_at(i, backend.mac_bytes, src_mac)",
                    "burst.set_macs_at(i, src_mac, backend.mac_bytes)",
                )
            ]
        },
    ),
    "l3_perpacket_round_robin": M(
        3,
        "paths",
        "per-packet: the next backend for every packet",
        {
            "dpdk_lb.py": [
                (
                    "            backend = lb.backend_for(flow, now)  # THE decision, shared by"
                    " all ways\n",
                    "            backend = lb.backend_for(flow, now)  # THE decision, shared by"
                    " all ways\n"
                    "            backends = lb.config.backends\n"
                    "            backend = backends[(self.bursts[txq] + i) %"
                    " len(backends)]\n",
                )
            ]
        },
    ),
    "l3_perpacket_keep_off_by_one": M(
        3,
        "paths",
        "per-packet: keep mask off by one",
        {"dpdk_lb.py": [("                keep[i] = 1\n", "                keep[i - 1] = 1\n")]},
    ),
    "l3_perpacket_first_only": M(
        3,
        "paths",
        "per-packet: only the first packet of each burst",
        {"dpdk_lb.py": [("        for i in range(len(burst)):\n", "        for i in range(1):\n")]},
    ),
    "l3_perpacket_no_parse_check": M(
        3,
        "paths",
        "per-packet: an unparsed frame is not dropped (crashes on the first junk frame)",
        {
            "dpdk_lb.py": [
                (
                    "            if flow is None:\n"
                    "                lb.count_drop(burst.reason(i))\n"
                    "                continue\n",
                    "",
                )
            ]
        },
    ),
    "l3_vector_zero_src_mac": M(
        3,
        "correctness",
        "vector: source MAC left as zeros",
        {
            "dpdk_lb.py": [
                (
                    "burst.set_macs(choice, self.mac_table, self.src_mac)  # C",
                    "burst.set_macs(choice, self.mac_table, bytes(6))  # C",
                )
            ]
        },
    ),
    "l3_vector_keep_inverted": M(
        3,
        "correctness",
        "vector: keeps the dropped frames, frees the valid ones whenever a burst holds junk",
        {
            "dpdk_lb.py": [
                ("            burst.keep(choice >= 0)", "            burst.keep(choice < 0)")
            ]
        },
    ),
    # Measured: the frames it should have dropped go back out unrewritten (to the LB's own
    # MAC). Once the affinity run mixed junk into its bursts, that run loses most of its flows
    # (298 of 348) and the mixed bursts' valid frames: correctness names it. (Robustness,
    # frames one at a time then 20 flows, no longer sees it.)
    "l3_vector_never_frees": M(
        3,
        "correctness",
        "vector: dropped frames are transmitted unrewritten (keep never called)",
        {"dpdk_lb.py": [("        if lb.forwarded - forwarded != n:", "        if False:")]},
    ),
    "l3_vector_backend_off_by_one": M(
        3,
        "key",
        "vector: backend index off by one (every flow consistently on the next backend)",
        {
            "dpdk_lb.py": [
                (
                    "        burst.set_macs(choice, self.mac_table, self.src_mac)  # C",
                    "        nb = len(self.mac_table) // 6\n"
                    "        choice = ((choice + 1) % nb) * (choice >= 0) - (choice < 0)\n"
                    '        choice = choice.astype("int32")\n'
                    "        burst.set_macs(choice, self.mac_table, self.src_mac)  # C",
                )
            ]
        },
    ),
}


def build(name: str, dest: str) -> str:
    """Write mutant ``name`` as a submission directory (the lab's student files) in ``dest``."""
    m = MUTANTS[name]
    os.makedirs(dest, exist_ok=True)
    for student, ref in LAB_FILES[m.lab].items():
        with open(os.path.join(REPO, ref)) as f:
            text = f.read()
        for old, new in m.edits.get(student, []):
            if text.count(old) != 1:
                raise AssertionError(
                    f"mutant {name}: {old!r} occurs {text.count(old)} times in "
                    f"{ref}: update the edit to the reference"
                )
            text = text.replace(old, new)
        with open(os.path.join(dest, student), "w") as f:
            f.write(text)
    return dest


def for_lab(lab: int) -> list[str]:
    return [n for n, m in MUTANTS.items() if m.lab == lab]
