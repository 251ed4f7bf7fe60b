"""Near-duplicate removal: documents per second per core, zephyr_arrow beside datasketch, rensa and datatrove.

    .venv/bin/python benches/near_duplicates_speed.py [--medium benches/data/medium] [--other-python /work/bench-venv/bin/python]

datatrove, rensa and datasketch run from ``--other-python`` (a venv with
``pip install datatrove[processing] spacy datasketch rensa``: datatrove's English word tokenizer
is spaCy's), zephyr_arrow from this one. Each measurement is a fresh process
(``near_duplicates_systems.py``), the systems interleaved, ``--repeat`` times; the table shows
medians and, for memory, the peak of the RSS summed over the process tree (``run.TreeMemory``).

CPU seconds are those of every process the measured one started, however it ended: this process
is a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``), so a descendant whose parent exits
without waiting for it (datatrove's pool workers live under multiprocessing's fork server, which
outlives the run and is never waited for) is re-parented here, and this process waits for every
one of them and adds its rusage, its own waited-for descendants included. Without it (the run's
``waited_cpu``: the process and what it waited for) datatrove's whole operation on the subset
showed 1.0 of its 43.8 CPU s.

- **signatures**: one core, the first 5,000 medium texts in memory: texts per CPU second.
- **dedup, subset**: the whole operation (JSONL in, kept documents out) on 10,000 documents in
  2 files, as is and with 30% planted near-duplicates: documents per CPU second (all processes)
  and per wall second per worker (2 workers; datasketch and rensa use one process).
- **dedup, medium**: zephyr_arrow (``--medium-systems``: and datatrove) on the 800k documents of
  the medium corpus, as is and with 30% planted near-duplicates (the others take minutes to hours
  there); and on a quarter of it, to show memory does not grow with the input (and a sixteenth,
  one file, for datatrove on a busy machine).
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import gzip
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from run import TreeMemory

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEMS = ["za", "datasketch", "rensa", "datatrove"]
SIGNATURE_TEXTS = 5_000
SUBSET_FILES, SUBSET_DOCS_PER_FILE = 2, 5_000  # datatrove takes 4 ms of CPU a document
# The medium corpus is 16 files of 50,000 documents: (its name in the table, how many of its files).
MEDIUM_CORPORA = {"sixteenth": ("medium, a sixteenth", 1), "quarter": ("medium, a quarter", 4), "medium": ("medium", 16), "planted": ("medium, 30% planted", 16)}
MEDIUM_DOCS_PER_FILE = 50_000
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def become_subreaper() -> None:
    """Orphaned descendants of this process's children are re-parented to it (Linux 3.4+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed: CPU seconds of orphaned workers would be lost")


def reap_orphans() -> int:
    """Wait for every descendant re-parented here (see ``become_subreaper``); how many there were."""
    reaped = 0
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return reaped
        reaped += 1


def cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def measure(python: str, args: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen([python, os.path.join(HERE, "near_duplicates_systems.py"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(process.pid)
    stdout, stderr = process.communicate()
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)  # the process and what it waited for: the figure before the subreaper
    orphans = reap_orphans()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak, _ = memory.stop()
    if process.returncode != 0:
        raise SystemExit(f"{args} failed:\n{stderr[-3000:]}")
    result = {
        **json.loads(stdout.strip().splitlines()[-1]), "wall": wall, "tree_cpu": cpu_seconds(after) - cpu_seconds(before),
        "waited_cpu": cpu_seconds(waited) - cpu_seconds(before), "orphans": orphans, "peak_mb": peak / 2**20,
    }
    print(json.dumps({"run": args, **result}), file=sys.stderr, flush=True)  # each run as it ends: a long run's partial results
    return result


def subset(source: str, out: str, files: int, docs_per_file: int) -> str:
    """The first ``docs_per_file`` documents of the first ``files`` files of ``source``."""
    os.makedirs(out, exist_ok=True)
    for path in sorted(glob.glob(source))[:files]:
        target = os.path.join(out, os.path.basename(path))
        if not os.path.exists(target):
            with gzip.open(path, "rt") as lines, gzip.open(target + ".tmp", "wt", compresslevel=1) as written:
                for _, line in zip(range(docs_per_file), lines):
                    written.write(line)
            os.replace(target + ".tmp", target)
    return os.path.join(out, "*.jsonl.gz")


def planted(python: str, source: str, out: str) -> str:
    if not os.path.exists(os.path.join(out, "done")):
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([python, os.path.join(HERE, "near_duplicates_systems.py"), "plant", source, out, "0.3"], check=True)
        open(os.path.join(out, "done"), "w").close()
    return os.path.join(out, "*.jsonl.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--medium", default=os.path.join(HERE, "data", "medium"))
    parser.add_argument("--other-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--data", default=os.path.join(HERE, "data", "near-duplicates"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="for the signatures and the subsets")
    parser.add_argument("--skip-signatures", action="store_true")
    parser.add_argument("--subsets", default="subset,planted", help="subset (of the medium corpus), planted (its planted copy)")
    parser.add_argument("--medium-repeat", type=int, default=1)
    parser.add_argument("--medium-systems", default="za", help="za,datatrove: datatrove takes about 4 CPU ms a document")
    parser.add_argument("--medium-corpora", default="quarter,medium,planted", help="sixteenth (50k documents), quarter (200k), medium (800k), planted (800k)")
    parser.add_argument("--skip-medium", action="store_true")
    parser.add_argument("--only-medium", action="store_true", help="the medium corpora alone")
    args = parser.parse_args()
    become_subreaper()
    systems, medium_systems = args.systems.split(","), args.medium_systems.split(",")
    subsets, medium_corpora = set(args.subsets.split(",")), [] if args.skip_medium else args.medium_corpora.split(",")
    ours = sys.executable
    python_of = {system: ours if system == "za" else args.other_python for system in SYSTEMS}
    medium = os.path.join(args.medium, "docs", "*.jsonl.gz")
    medium_planted = planted(ours, medium, os.path.join(args.data, "medium-planted")) if "planted" in subsets | set(medium_corpora) else None
    corpora = {}
    if "subset" in subsets:
        corpora["subset"] = subset(medium, os.path.join(args.data, "subset"), SUBSET_FILES, SUBSET_DOCS_PER_FILE)
    if "planted" in subsets:
        corpora["subset, 30% planted"] = subset(medium_planted, os.path.join(args.data, "subset-planted"), SUBSET_FILES, SUBSET_DOCS_PER_FILE)
    env_one_core = {**os.environ, "POLARS_MAX_THREADS": "1"}
    os.environ.update(env_one_core)  # signatures: one core for every system (Polars' threads too)
    results: dict[tuple[str, str], list[dict]] = {}
    for _ in range(0 if args.only_medium or args.skip_signatures else args.repeat):
        for system in systems:
            results.setdefault(("signatures", system), []).append(measure(python_of[system], ["signatures", system, medium, str(SIGNATURE_TEXTS)]))
    os.environ.pop("POLARS_MAX_THREADS")
    scratch = tempfile.mkdtemp(prefix="near-dup-bench-")
    try:
        for _ in range(0 if args.only_medium else args.repeat):
            for name, pattern in corpora.items():
                for system in systems:
                    out = os.path.join(scratch, f"{system}-{len(results)}")
                    results.setdefault((name, system), []).append(measure(python_of[system], ["dedup", system, pattern, out]))
                    shutil.rmtree(out, ignore_errors=True)
        for corpus in medium_corpora:
            name, files = MEDIUM_CORPORA[corpus]
            if corpus in ("sixteenth", "quarter"):
                pattern = subset(medium, os.path.join(args.data, f"medium-{corpus}"), files, 10**9)
            else:
                pattern = medium if corpus == "medium" else medium_planted
            for _ in range(args.medium_repeat):  # za: a minute and a half of CPU or more on medium; datatrove: 4 CPU ms a document
                for system in medium_systems:
                    out = os.path.join(scratch, f"{system}-medium")
                    results.setdefault((name, system), []).append(measure(python_of[system], ["dedup", system, pattern, out]))
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_table(results)


def print_table(results: dict[tuple[str, str], list[dict]]) -> None:
    def median(runs: list[dict], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    signed = [system for system in SYSTEMS if ("signatures", system) in results]
    if signed:
        print(f"| signatures (1 core, {SIGNATURE_TEXTS:,} texts) | texts / CPU s | vs {signed[0]} |")
        print("|---|---|---|")
        first = None
        for system in signed:
            runs = results[("signatures", system)]
            rate = runs[0]["docs"] / median(runs, "cpu")
            first = first or rate
            print(f"| {system} | {rate:,.0f} | {rate / first:.2f}x |")
        print()
    files_of = dict(MEDIUM_CORPORA.values())
    print("| dedup | system | docs | kept | wall s | CPU s | docs / CPU s | docs / s / worker | peak RSS MB | CPU s without orphans |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, system), runs in results.items():
        if name == "signatures":
            continue
        docs = SUBSET_FILES * SUBSET_DOCS_PER_FILE if name.startswith("subset") else files_of[name] * MEDIUM_DOCS_PER_FILE
        workers = 2 if system in ("za", "datatrove") else 1
        wall, cpu = median(runs, "wall"), median(runs, "tree_cpu")
        print(
            f"| {name} | {system} | {docs:,} | {runs[0]['docs_kept']:,} | {wall:.1f} | {cpu:.1f} | {docs / cpu:,.0f} | "
            f"{docs / wall / workers:,.0f} | {median(runs, 'peak_mb'):,.0f} | {median(runs, 'waited_cpu'):.1f} |"
        )


if __name__ == "__main__":
    main()
