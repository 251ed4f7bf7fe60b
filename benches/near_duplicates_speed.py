"""Near-duplicate removal: documents per second per core, zephyr_arrow beside datasketch, rensa and datatrove.

    .venv/bin/python benches/near_duplicates_speed.py [--medium benches/data/medium] [--other-python /work/bench-venv/bin/python]

datatrove, rensa and datasketch run from ``--other-python`` (a venv with
``pip install datatrove[processing] spacy datasketch rensa``: datatrove's English word tokenizer
is spaCy's), zephyr_arrow from this one. Each measurement is a fresh process
(``near_duplicates_systems.py``), the systems interleaved, ``--repeat`` times; the table shows
medians and, for memory, the peak of the RSS summed over the process tree (``run.TreeMemory``).

- **signatures**: one core, the first 5,000 medium texts in memory: texts per CPU second.
- **dedup, subset**: the whole operation (JSONL in, kept documents out) on 10,000 documents in
  2 files, as is and with 30% planted near-duplicates: documents per CPU second (all processes)
  and per wall second per worker (2 workers; datasketch and rensa use one process).
- **dedup, medium**: zephyr_arrow alone on the 800k documents of the medium corpus, as is and
  with 30% planted near-duplicates (the others take minutes to hours there); and on a quarter of
  it, to show memory does not grow with the input.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
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


def measure(python: str, args: list[str]) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen([python, os.path.join(HERE, "near_duplicates_systems.py"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    peak, _ = memory.stop()
    stdout, stderr = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args} failed:\n{stderr[-3000:]}")
    result = {**json.loads(stdout.strip().splitlines()[-1]), "wall": wall, "tree_cpu": usage.ru_utime + usage.ru_stime, "peak_mb": peak / 2**20}
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
    parser.add_argument("--medium-repeat", type=int, default=1)
    parser.add_argument("--skip-medium", action="store_true")
    parser.add_argument("--only-medium", action="store_true", help="zephyr_arrow on the medium corpora alone")
    args = parser.parse_args()
    ours = sys.executable
    python_of = {system: ours if system == "za" else args.other_python for system in SYSTEMS}
    medium = os.path.join(args.medium, "docs", "*.jsonl.gz")
    medium_planted = planted(ours, medium, os.path.join(args.data, "medium-planted"))
    corpora = {
        "subset": subset(medium, os.path.join(args.data, "subset"), SUBSET_FILES, SUBSET_DOCS_PER_FILE),
        "subset, 30% planted": subset(medium_planted, os.path.join(args.data, "subset-planted"), SUBSET_FILES, SUBSET_DOCS_PER_FILE),
    }
    env_one_core = {**os.environ, "POLARS_MAX_THREADS": "1"}
    os.environ.update(env_one_core)  # signatures: one core for every system (Polars' threads too)
    results: dict[tuple[str, str], list[dict]] = {}
    for _ in range(0 if args.only_medium else args.repeat):
        for system in SYSTEMS:
            results.setdefault(("signatures", system), []).append(measure(python_of[system], ["signatures", system, medium, str(SIGNATURE_TEXTS)]))
    os.environ.pop("POLARS_MAX_THREADS")
    scratch = tempfile.mkdtemp(prefix="near-dup-bench-")
    try:
        for _ in range(0 if args.only_medium else args.repeat):
            for name, pattern in corpora.items():
                for system in SYSTEMS:
                    out = os.path.join(scratch, f"{system}-{len(results)}")
                    results.setdefault((name, system), []).append(measure(python_of[system], ["dedup", system, pattern, out]))
                    shutil.rmtree(out, ignore_errors=True)
        if not args.skip_medium:
            quarter = subset(medium, os.path.join(args.data, "medium-quarter"), 4, 10**9)
            for name, pattern in {"medium, a quarter": quarter, "medium": medium, "medium, 30% planted": medium_planted}.items():
                for _ in range(args.medium_repeat):  # a minute and a half of CPU or more each
                    out = os.path.join(scratch, "za-medium")
                    results.setdefault((name, "za"), []).append(measure(ours, ["dedup", "za", pattern, out]))
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_table(results)


def print_table(results: dict[tuple[str, str], list[dict]]) -> None:
    def median(runs: list[dict], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    print(f"| signatures (1 core, {SIGNATURE_TEXTS:,} texts) | texts / CPU s | vs zephyr_arrow |")
    print("|---|---|---|")
    ours = None
    for system in SYSTEMS if ("signatures", "za") in results else ():
        runs = results[("signatures", system)]
        rate = runs[0]["docs"] / median(runs, "cpu")
        ours = ours or rate
        print(f"| {system} | {rate:,.0f} | {rate / ours:.2f}x |")
    print()
    print("| dedup | system | docs | kept | wall s | CPU s | docs / CPU s | docs / s / worker | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, system), runs in results.items():
        if name == "signatures":
            continue
        docs = SUBSET_FILES * SUBSET_DOCS_PER_FILE if name.startswith("subset") else 800_000 // (4 if "quarter" in name else 1)
        workers = 2 if system in ("za", "datatrove") else 1
        wall, cpu = median(runs, "wall"), median(runs, "tree_cpu")
        print(
            f"| {name} | {system} | {docs:,} | {runs[0]['docs_kept']:,} | {wall:.1f} | {cpu:.1f} | {docs / cpu:,.0f} | "
            f"{docs / wall / workers:,.0f} | {median(runs, 'peak_mb'):,.0f} |"
        )


if __name__ == "__main__":
    main()
