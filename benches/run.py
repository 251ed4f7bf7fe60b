"""Run the workloads on every system side by side and print a table of ratios.

    .venv/bin/python benches/run.py --size small [--repeat 3] [--systems za_rows,polars] [--workloads W1,W5]

Each (system, workload, repeat) runs in a fresh process. Reported per cell: the median
wall seconds (the workload inside the process for W1-W4; the whole process, interpreter
start and imports included, for W5), CPU seconds of the process tree, and the peaks of
the RSS and of the PSS summed over the process tree (see ``TreeMemory``). Ratios are to
zephyr_arrow (za_rows for row-function systems, za_columnar for columnar ones) in the same run.
Answers are cross-checked: a system that disagrees with the others is flagged.

Zephyr itself runs from its own virtual environment (``--zephyr-python``, default
/work/zephyr-venv/bin/python; see benches/README.md to create it); it is skipped when
that interpreter does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEMS = ["za_rows", "za_columnar", "zephyr", "python", "polars", "duckdb"]
WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"]
COLUMNAR_ONLY = {"W6", "W7", "W8"}  # written for za_columnar, polars and duckdb alone
COLUMNAR_SYSTEMS = {"za_columnar", "polars", "duckdb"}


class TreeMemory:
    """Sample the memory of a process and all its descendants until stopped: the peak of the
    summed RSS (every 20 ms) and of the summed PSS (every 100 ms, where Linux reports it).

    RSS counts a page shared by several processes (a library's code, mapped by each worker)
    once per process; PSS divides it among them, so summed PSS is what the tree takes. A
    process shorter than 100 ms (W5's) gets one PSS sample, at 20 ms: read its RSS.
    """

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self.peak_pss: int | None = 0 if os.path.exists(f"/proc/{pid}/smaps_rollup") else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        samples = 0
        while not self._stop.wait(0.02):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            samples += 1
            if self.peak_pss is not None and samples % 5 == 1:  # reading smaps_rollup costs ~1 ms a process
                self.peak_pss = max(self.peak_pss, sum(_pss(process.pid) for process in processes))

    def stop(self) -> tuple[int, int | None]:
        """The peaks; PSS is None where it is not reported, or the process ended before a sample."""
        self._stop.set()
        self._thread.join()
        return self.peak, self.peak_pss or None


def _pss(pid: int) -> int:
    """A process's proportional set size in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_once(python: str, system: str, workload: str, corpus: str, out: str) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen(
        [python, os.path.join(HERE, "systems.py"), system, workload, corpus, out],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    memory = TreeMemory(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    peak, peak_pss = memory.stop()
    process.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = process.stdout.read(), process.stderr.read()
    if process.returncode != 0:
        return {"error": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {process.returncode}"}
    result = json.loads(stdout.strip().splitlines()[-1])
    return {
        "answer": result["answer"],
        "seconds": wall if workload == "W5" else result["seconds"],
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mb": peak / 2**20,
        "pss_mb": None if peak_pss is None else peak_pss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "medium"])
    parser.add_argument("--corpus", help="an existing corpus directory (default: benches/data/SIZE, generated once)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--zephyr-python", default="/work/zephyr-venv/bin/python")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()

    corpus = args.corpus or os.path.join(HERE, "data", args.size)
    if not os.path.exists(os.path.join(corpus, "manifest.json")):
        subprocess.run([sys.executable, os.path.join(HERE, "corpus.py"), "--size", args.size, "--out", corpus], check=True)
    systems = [s for s in args.systems.split(",") if s != "zephyr" or os.path.exists(args.zephyr_python)]
    workloads = args.workloads.split(",")

    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="zephyr-bench-") as scratch:
        for repeat in range(args.repeat):
            # Each round starts at another system: a system run right after another's big run
            # was measured slower (za_columnar W3 5.4 s alone, up to 6.7 s after others), so no
            # system always takes the same place.
            order = systems[repeat % len(systems) :] + systems[: repeat % len(systems)]
            for workload in workloads:
                for system in order:
                    if workload in COLUMNAR_ONLY and system not in COLUMNAR_SYSTEMS:
                        continue
                    # W5 reads what this system's W1 wrote; every other workload starts empty.
                    out = os.path.join(scratch, system, "W1" if workload == "W5" else workload)
                    if workload != "W5":
                        shutil.rmtree(out, ignore_errors=True)
                        os.makedirs(out)
                    elif not os.path.isdir(os.path.join(out, "w1")):
                        continue
                    python = args.zephyr_python if system == "zephyr" else sys.executable
                    result = run_once(python, system, workload, corpus, out)
                    results.setdefault((system, workload), []).append(result)
                    summary = result.get("error") or f"{result['seconds']:.2f}s answer={result['answer']}"
                    print(f"  [{repeat + 1}/{args.repeat}] {workload} {system}: {summary}", file=sys.stderr)
    with open(os.path.join(corpus, "manifest.json")) as manifest:
        size = json.load(manifest)["size"]  # of the corpus read, which --corpus may name
    print_table(results, systems, workloads, size)
    if args.json:
        with open(args.json, "w") as out_file:
            json.dump({f"{s}/{w}": r for (s, w), r in results.items()}, out_file, indent=1)


def summarise(runs: list[dict]) -> dict | None:
    good = [r for r in runs if "error" not in r]
    if not good:
        return None
    return {
        "seconds": statistics.median(r["seconds"] for r in good),
        "cpu": statistics.median(r["cpu"] for r in good),
        "peak_mb": statistics.median(r["peak_mb"] for r in good),
        "pss_mb": statistics.median(r["pss_mb"] for r in good) if all(r.get("pss_mb") is not None for r in good) else None,
        "answer": good[0]["answer"],
    }


def print_table(results: dict, systems: list[str], workloads: list[str], size: str) -> None:
    print(f"\n{size} corpus, {psutil.cpu_count()} cores, {platform.python_version()}, medians; "
          "x = wall time relative to zephyr_arrow (za_rows for zephyr/python, za_columnar for polars/duckdb)\n")
    print("| workload | system | wall s | cpu s | peak MB (tree RSS) | peak MB (tree PSS) | x | answer |")
    print("|---|---|---|---|---|---|---|---|")
    for workload in workloads:
        cells = {s: summarise(results.get((s, workload), [])) for s in systems}
        answers = [json.dumps(c["answer"]) for c in cells.values() if c]
        majority = max(set(answers), key=answers.count) if answers else None
        for system in systems:
            cell = cells[system]
            if cell is None:
                errors = [r["error"] for r in results.get((system, workload), []) if "error" in r]
                if errors:
                    print(f"| {workload} | {system} | error: {errors[0][:60]} | | | | | |")
                continue
            base_name = "za_columnar" if system in ("polars", "duckdb", "za_columnar") else "za_rows"
            base = cells.get(base_name) or cells.get("za_columnar")
            ratio = f"{cell['seconds'] / base['seconds']:.2f}" if base else ""
            flag = "" if json.dumps(cell["answer"]) == majority else " **differs**"
            pss = "" if cell["pss_mb"] is None else f"{cell['pss_mb']:.0f}"
            print(f"| {workload} | {system} | {cell['seconds']:.2f} | {cell['cpu']:.2f} | {cell['peak_mb']:.0f} | {pss} | {ratio} | "
                  f"{json.dumps(cell['answer'])[:40]}{flag} |")


if __name__ == "__main__":
    main()
