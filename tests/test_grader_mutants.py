"""The mutation corpus, a representative subset (root, about 6 minutes on 2 cores).

``vnflab grade-mutants`` grades mutants of the reference (``grader_fixtures/mutants.py``) with
copies of the reference alongside; each mutant must lose points in the test named for it, the
reference nothing. The subset takes one mutant per new check: the hidden parser corpus, mixed
bursts, replies from VIP:port, every written path (NAT mode, lab 3's per-packet style) and the
cost at saturation (no batching, a list-scan flow table, a Python loop as the vector path). The
whole corpus is a documented command (docs/grading.md), not CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from grader.labconfig import REPO

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.extended]

SUBSETS = {
    1: ["l1_reply_from_own_port", "l1_list_scan_table"],
    2: ["l2_inner_vlan_id", "l2_send_per_packet", "l2_choices_skip_drops", "l2_nat_no_replies"],
    3: ["l3_vector_python_loop", "l3_perpacket_keep_off_by_one"],
}


def _grade_mutants(lab: int, out: str, names: list[str]) -> dict:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.cli",
            "grade-mutants",
            "--lab",
            str(lab),
            "--out",
            out,
            "--jobs",
            "2",
            "--quick",
            "--references",
            "1",
            "--only",
            ",".join(names),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=REPO,
    )
    assert os.path.exists(os.path.join(out, "mutants.json")), r.stdout[-3000:] + r.stderr[-3000:]
    with open(os.path.join(out, "mutants.json")) as f:
        return json.load(f) | {"stdout": r.stdout}


@pytest.mark.parametrize("lab", [1, 2, pytest.param(3, marks=pytest.mark.dpdk)])
def test_each_mutant_loses_points_in_its_test_and_the_reference_none(lab, tmp_path):
    s = _grade_mutants(lab, str(tmp_path / "out"), SUBSETS[lab])
    missed = [(r["mutant"], r["must_catch"], r["lost"]) for r in s["mutants"] if not r["caught"]]
    assert not missed, f"mutants not caught by their test: {missed}\n{s['stdout'][-2000:]}"
    (ref,) = s["references"]
    assert not ref["lost"] and not ref["error"], f"the reference lost points: {ref}"
