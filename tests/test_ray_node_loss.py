"""Losing a machine of a Ray cluster while a stage runs: its tasks rerun elsewhere, the answer is exact.

The cluster (a head and three one-CPU nodes, ``ray.cluster_utils.Cluster``) runs in a process
of its own, ``ray_node_loss.py``, so that it does not meet the test session's Ray. The chunk
prefix is on storage every node shares (this machine's disk), as the README asks of a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "ray_node_loss.py")


def test_a_lost_node_s_tasks_rerun_on_the_others_and_the_answer_is_exact(tmp_path):
    done = subprocess.run(
        [sys.executable, SCRIPT, str(tmp_path / "chunks")], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("{")]
    report = json.loads(line)
    assert report["result"] == [{"shard": shard, "n": 1} for shard in range(6)]
    (lost,) = report["removed"]
    arrivals = [tuple(arrival) for arrival in report["arrivals"]]
    on_lost = [shard for shard, node in arrivals if node == lost]
    assert on_lost, "a task was running on the node that was removed"
    for shard in on_lost:  # ... and ran again, to completion, on a node that was still there
        assert any(node != lost for again, node in arrivals if again == shard)
    assert sorted({shard for shard, _ in arrivals}) == list(range(6))
