"""What gradings left behind, for the tests that grade: one scan, shared by every grading test.

Gradings still running (another engineer's or CI job's on the same machine) are not leftovers:
each check asks ``grader.grade.grading_alive`` about the grading a thing belongs to."""

import glob
import os
import re
import subprocess

NOTHING = {"processes": [], "cgroups": [], "workdirs": []}


def jail_leftovers() -> dict:
    """Jailed processes (of the jail users, in a vnflab cgroup), cgroups and work dirs of
    gradings no longer running. ``NOTHING`` when all is clean."""
    from grader.grade import GRADING_ROOT, grading_alive
    from grader.sandbox_user import USERS

    procs = []
    for user in USERS:
        r = subprocess.run(["pgrep", "-u", user], capture_output=True, text=True)
        for pid in r.stdout.split():
            try:
                with open(f"/proc/{pid}/cgroup") as f:
                    gradings = set(re.findall(r"/vnflab/(grade-[^/\s]+)", f.read()))
            except OSError:
                continue
            if gradings and not any(grading_alive(g) for g in gradings):
                procs.append(int(pid))
    groups = [
        g
        for g in glob.glob("/sys/fs/cgroup/*/vnflab/grade-*")
        if not grading_alive(os.path.basename(g))
    ]
    workdirs = [
        d
        for d in (os.listdir(GRADING_ROOT) if os.path.isdir(GRADING_ROOT) else [])
        if os.path.exists(os.path.join(GRADING_ROOT, d, "grading.lock")) and not grading_alive(d)
    ]
    return {"processes": procs, "cgroups": groups, "workdirs": workdirs}
