"""The commands on kept runs: ``runs`` (list, ``--delete``), ``gc`` and ``replay``."""

from __future__ import annotations

import argparse
import pdb
import re
import time
import traceback

from zephyr_arrow.cli.text_table import format_table, human_bytes

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d`` in seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 12h or 7d, got {text!r}")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def cmd_runs(args: argparse.Namespace) -> None:
    from zephyr_arrow.execution.kept_runs import delete_run, list_runs

    if args.delete:
        print(f"deleted {delete_run(args.prefix, args.delete)}")
        return
    rows = []
    for run in list_runs(args.prefix):
        shards = " ".join(f"{done}/{total}" for done, total in run.shards)
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.updated))
        rows.append([run.key, run.state, f"{run.stages_done}/{len(run.shards)}", shards, human_bytes(run.num_bytes), updated])
    print(format_table(["key", "state", "stages done", "shards per stage", "bytes", "last update"], rows))


def cmd_gc(args: argparse.Namespace) -> None:
    from zephyr_arrow.execution.kept_runs import collect_garbage

    removed = collect_garbage(args.prefix, args.older_than, args.checkpoints)
    for path in removed:
        print(f"deleted {path}")
    print(f"{len(removed)} run director{'y' if len(removed) == 1 else 'ies'} deleted")


def cmd_replay(args: argparse.Namespace) -> int:
    from zephyr_arrow.errors import ZephyrError
    from zephyr_arrow.execution.kept_runs import replay

    try:
        result = replay(args.prefix, args.key, args.stage, args.shard)
    except ZephyrError:
        raise
    except Exception:  # the task's own error: its traceback is what the user replays it for
        traceback.print_exc()
        if args.pdb:
            pdb.post_mortem()
        return 1
    stats = result.stats
    print(f"stage {args.stage}, shard {args.shard}: {stats.rows_in:,} rows in, {stats.rows_out:,} rows out, "
          f"{stats.chunks_out} chunk(s), {stats.seconds:.2f}s")
    for output in result.outputs:
        print(f"  {output.chunk.path} ({output.chunk.num_rows:,} rows)")
    if result.counters:
        print(f"counters: {result.counters}")
    return 0


def add_commands(commands: argparse._SubParsersAction, non_negative_int) -> None:
    runs = commands.add_parser(
        "runs",
        help="the runs kept by checkpoints under a chunk prefix: state, stages and shards done, bytes",
        description="List each run kept under PREFIX by execute(..., checkpoint=KEY): running (a live driver holds it), "
        "failed (stopped before the end: run it again to resume) or complete.",
    )
    runs.add_argument("prefix", metavar="PREFIX", help="the chunk_storage_prefix the runs used (a path or fsspec URL)")
    runs.add_argument("--delete", metavar="KEY", default=None, help="delete the run kept under KEY (its chunks and records)")
    runs.set_defaults(handler=cmd_runs)

    gc = commands.add_parser(
        "gc",
        help="delete run directories left under a chunk prefix by drivers that died",
        description="Delete the execution directories under PREFIX in which nothing changed for --older-than: those of runs "
        "without a checkpoint (a driver killed outright deletes nothing), and with --checkpoints also kept runs no live "
        "driver holds.",
    )
    gc.add_argument("prefix", metavar="PREFIX", help="the chunk_storage_prefix the runs used")
    gc.add_argument("--older-than", type=duration, default=duration("1d"), metavar="DURATION",
                    help="only directories unchanged for this long (90s, 30m, 12h, 7d; default 1d)")
    gc.add_argument("--checkpoints", action="store_true", help="also delete kept runs (checkpoints) no driver holds")
    gc.set_defaults(handler=cmd_gc)

    replay = commands.add_parser(
        "replay",
        help="run one task of a kept run in this process, on its recorded inputs (for pdb and prints)",
        description="Run the task of shard N of stage S of the run kept under KEY again, in this process, on the inputs it "
        "was given; the pipeline's modules must be importable here. A write task writes its file again.",
    )
    replay.add_argument("prefix", metavar="PREFIX", help="the chunk_storage_prefix the run used")
    replay.add_argument("key", metavar="KEY", help="the checkpoint key")
    replay.add_argument("--stage", type=non_negative_int, required=True, metavar="S")
    replay.add_argument("--shard", type=non_negative_int, required=True, metavar="N")
    replay.add_argument("--pdb", action="store_true", help="on an exception, enter the debugger where it was raised")
    replay.set_defaults(handler=cmd_replay)

