"""Run by tests/test_ray_node_loss.py in a process of its own: a Ray cluster of a head and three
one-CPU worker nodes on this machine, one of which is removed while a stage runs.

Every task of the first stage reports its node to a gate actor on the head node and waits
at the gate. When two tasks wait (one per worker actor, on two nodes), the node of the first
is removed (its raylet and every process on it killed, as when a machine is lost), and the
gate opens. Prints one JSON line: the run's rows, the node removed and the arrivals.

usage: python ray_node_loss.py CHUNK_PREFIX
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from zephyr_arrow import Dataset, ZephyrContext

NUM_SHARDS = 6


@ray.remote(num_cpus=0)
class Gate:
    def __init__(self) -> None:
        self.arrivals: list[tuple[int, str]] = []
        self.changed = asyncio.Condition()
        self.opened = asyncio.Event()

    async def arrive(self, shard: int, node: str) -> None:
        async with self.changed:
            self.arrivals.append((shard, node))
            self.changed.notify_all()

    async def wait_for_arrivals(self, count: int) -> list[tuple[int, str]]:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.arrivals) >= count)
            return list(self.arrivals)

    async def wait_open(self) -> None:
        await self.opened.wait()

    async def open(self) -> list[tuple[int, str]]:
        self.opened.set()
        return list(self.arrivals)


def at_the_gate(row: dict) -> dict:
    gate = ray.get_actor("gate")
    ray.get(gate.arrive.remote(row["shard"], ray.get_runtime_context().get_node_id()))
    ray.get(gate.wait_open.remote())
    return {"shard": row["shard"], "value": row["shard"] * 10}


def main(prefix: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 * 1024 * 1024})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=80 * 1024 * 1024) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    head = ray.get_runtime_context().get_node_id()
    gate = Gate.options(name="gate", scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
    removed: list[str] = []

    def lose_a_node() -> None:
        (_, node), _ = ray.get(gate.wait_for_arrivals.remote(2))
        victim = next(worker for worker in workers if worker.node_id == node)
        cluster.remove_node(victim, allow_graceful=False)
        removed.append(node)
        ray.get(gate.open.remote())

    loser = threading.Thread(target=lose_a_node, daemon=True)
    loser.start()
    rows = [{"shard": shard} for shard in range(NUM_SHARDS)]
    with ZephyrContext(backend="ray", max_workers=2, chunk_storage_prefix=prefix, progress=False) as ctx:
        refs = ctx.execute(Dataset.from_list(rows, num_shards=NUM_SHARDS).map(at_the_gate).group_by("shard", lambda k, rs: {"shard": k, "n": len(list(rs))}))
        result = sorted(refs.to_pylist(), key=lambda row: row["shard"])
        stats = dict(refs.stats)
    loser.join()
    arrivals = ray.get(gate.open.remote())
    print(json.dumps({"result": result, "removed": removed, "arrivals": arrivals, "stats": stats}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
