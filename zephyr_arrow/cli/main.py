"""The ``zephyr-arrow`` command: demo, run, inspect, sql, report.

    zephyr-arrow --version
    zephyr-arrow demo [--backend local|sync] [--out DIR]
    zephyr-arrow run SCRIPT.py [--backend local|ray|sync] [--max-workers N] [--chunk-prefix URL] [--run-dir URL] [-- ARGS...]
    zephyr-arrow inspect PATH [--union]
    zephyr-arrow sql PATH "SELECT ... FROM data" [--union]
    zephyr-arrow report RUN [-o OUT.html]
    zephyr-arrow runs PREFIX [--delete KEY]
    zephyr-arrow gc PREFIX [--older-than DURATION] [--checkpoints]
    zephyr-arrow replay PREFIX KEY --stage S --shard N

PATH is a directory saved with ``ShardRefs.save`` (it holds ``_zephyr_manifest.json``),
a Parquet file, a directory of Parquet files (searched recursively) or a glob; a quoted
fsspec URL works too. ``run`` loads SCRIPT and calls its ``main(ctx)`` with a
``ZephyrContext`` built from the flags.

Exit codes: 0 success; 1 the work itself failed (bad SQL, a failing pipeline, an
unreadable file); 2 the command was wrong (unknown flag, missing PATH or SCRIPT, no
``main(ctx)``); 130 interrupted. Errors are one line on stderr, without a Python
traceback, except that an exception raised by a ``run`` script shows the script's own
traceback, as ``python SCRIPT.py`` would.

Only the standard library is imported here; pyarrow, Polars and DuckDB load when a
command needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING, NoReturn

from zephyr_arrow.cli.checkpoints import add_commands as add_checkpoint_commands
from zephyr_arrow.cli.text_table import format_table, human_bytes
from zephyr_arrow.errors import CommandError, UsageError

if TYPE_CHECKING:
    from zephyr_arrow.store import ShardRefs

PROG = "zephyr-arrow"
PATH_HELP = (
    "a saved ShardRefs directory (with _zephyr_manifest.json), a Parquet file, "
    "a directory of Parquet files, or a quoted glob such as 'out/*.parquet'"
)

UNION_HELP = (
    "read every output under a directory PATH as one table (without it, several saved outputs, "
    "or folders of files with different columns, are an error)"
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a wrong command line is one line on stderr (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# Reading PATH ---------------------------------------------------------------------------------


def open_path(path: str, union: bool = False) -> tuple[ShardRefs, str]:
    """PATH as ShardRefs (nothing copied), and a few words saying what kind of PATH it was.

    A directory holding several outputs (saved ShardRefs, or folders of files with different
    columns) is a UsageError naming them, unless ``union``: one table of all of them.
    """
    from zephyr_arrow import ShardRefs
    from zephyr_arrow.fs import filesystem
    from zephyr_arrow.store.layout import MANIFEST_NAME, join

    fs, fs_path = filesystem(path)
    if any(c in path for c in "*?[{"):
        from zephyr_arrow.fs import glob_files

        files = [p for p in glob_files(path, empty_glob_ok=True) if _is_data_file(p.rpartition("/")[2])]
        if not files:
            raise UsageError(f"no Parquet files match {path!r}")
        return _read_files(files), f"{len(files)} Parquet file(s) matching {path}"
    if not fs.exists(fs_path):
        raise UsageError(f"{path}: no such file or directory")
    if not fs.isdir(fs_path):
        return _read_files([path]), "a Parquet file"
    if fs.exists(join(fs_path, MANIFEST_NAME)):
        return ShardRefs.open(path), "a saved ShardRefs directory"
    below = len(fs_path.rstrip("/"))
    files = sorted(p for p in fs.glob(join(fs_path, "**", "*.parquet")) if _is_data_file(p[below:]))
    if not files:
        raise UsageError(f"{path}: a directory with no .parquet files in it")
    manifests = sorted(fs.glob(join(fs_path, "**", MANIFEST_NAME)))
    if "://" in path:
        files = [fs.unstrip_protocol(p) for p in files]
        manifests = [fs.unstrip_protocol(p) for p in manifests]
    refs = _read_files(files)
    if not union:
        _check_one_output(path, refs, [m.rpartition("/")[0] for m in manifests])
    return refs, f"a directory of {len(files)} Parquet file(s)"


def _check_one_output(path: str, refs: ShardRefs, saved_dirs: list[str]) -> None:
    """Several saved outputs, or folders whose files have different columns, are several outputs:
    reading them as one table would silently mix unrelated rows."""
    if len(saved_dirs) > 1:
        outputs = [f"{d} (saved ShardRefs)" for d in saved_dirs]
    else:
        # One output's chunks may differ (a column missing from some); folders that differ are outputs.
        columns: dict[str, set[str]] = {}
        for chunk in refs.chunks:
            columns.setdefault(_output_dir(chunk.path), set()).update(chunk.schema.names)
        if len({frozenset(names) for names in columns.values()}) == 1:
            return
        outputs = [f"{d} ({_columns_text(names)})" for d, names in sorted(columns.items())]
    raise UsageError(
        f"{path} holds {len(outputs)} outputs: {'; '.join(outputs)}. "
        "Name one of them, or pass --union to read them all as one table"
    )


def _output_dir(file: str) -> str:
    """The folder of one output: the file's, above any hive-style ``key=value`` folders."""
    parts = file.split("/")[:-1]
    while len(parts) > 1 and "=" in parts[-1]:
        parts.pop()
    return "/".join(parts)


def _columns_text(names: set[str]) -> str:
    columns = sorted(names)
    shown = ", ".join(columns[:6]) + (f", ... {len(columns) - 6} more" if len(columns) > 6 else "")
    return f"columns {shown}"


def _is_data_file(path: str) -> bool:
    """Skip what Parquet readers skip: hidden and ``_``-prefixed files and folders (Spark's
    ``_temporary/``), and half-written temp files. ``path``: below the folder searched."""
    parts = [part for part in path.split("/") if part]
    return not any(part.startswith((".", "_")) for part in parts) and ".tmp-" not in parts[-1]


def _read_files(files: list[str]) -> ShardRefs:
    import pyarrow as pa

    from zephyr_arrow import read_parquet

    try:
        return read_parquet(files)
    except (pa.ArrowInvalid, OSError) as error:
        raise CommandError(f"cannot read Parquet: {_first_line(error)}") from error


# Commands -------------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> None:
    refs, kind = open_path(args.path, args.union)
    from zephyr_arrow.arrow.rows import is_pickled
    from zephyr_arrow.fs import filesystem

    # Bytes are file sizes; a file that several shards share (row ranges of it) counts once,
    # in the first shard that references it, so the shard bytes add up to the total.
    sizes: dict[str, int] = {}
    shard_lines = []
    for shard_index, shard in enumerate(refs.shards):
        shard_bytes = 0
        for chunk in shard:
            if chunk.path not in sizes:
                fs, fs_path = filesystem(chunk.path)
                sizes[chunk.path] = fs.size(fs_path)
                shard_bytes += sizes[chunk.path]
        rows = sum(c.num_rows for c in shard)
        shard_lines.append([shard_index, len(shard), rows, shard_bytes])
    total_bytes = sum(sizes.values())
    print(f"{args.path}: {kind}")
    print(f"shards: {refs.num_shards:,}  chunks: {len(refs.chunks):,}  rows: {refs.num_rows:,}  "
          f"bytes: {total_bytes:,} ({human_bytes(total_bytes)})")
    print(f"schema ({len(refs.schema)} columns, unified over every chunk):")
    for field in refs.schema:
        notes = [] if field.nullable else ["not null"]
        if is_pickled(field):
            notes.append("pickled Python objects")
        print(f"  {field.name}: {field.type}" + (f"  ({', '.join(notes)})" if notes else ""))
    shown = shard_lines[: args.max_shards] if args.max_shards else shard_lines
    print(format_table(["shard", "chunks", "rows", "bytes"], shown, more=len(shown) < len(shard_lines)))


def cmd_sql(args: argparse.Namespace) -> None:
    refs, _ = open_path(args.path, args.union)
    import duckdb

    try:
        relation = refs.sql(args.query)
        if relation is None:  # a statement with no result (SET, COPY ... TO, ...)
            return
        rows = (relation.limit(args.max_rows + 1) if args.max_rows else relation).fetchall()
    except duckdb.Error as error:
        raise CommandError(_first_line(error)) from error
    more = bool(args.max_rows) and len(rows) > args.max_rows
    print(format_table(relation.columns, rows[: args.max_rows] if more else rows, more=more))


def cmd_run(args: argparse.Namespace) -> int:
    import inspect
    import runpy

    script = args.script
    if not os.path.isfile(script):
        raise UsageError(f"{script}: no such file")
    from zephyr_arrow import ZephyrContext

    sys.argv = [script, *args.script_args]
    # As `python SCRIPT.py` does: the script's folder comes first on sys.path, so it can import
    # its neighbours (and worker processes, which copy the driver's sys.path, can too).
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        namespace = runpy.run_path(script, run_name="__zephyr_arrow_script__")
    except Exception as error:
        _print_user_traceback(error)
        return 1
    main = namespace.get("main")
    if not callable(main):
        raise UsageError(f"{script} defines no main(ctx) function; '{PROG} run' calls main with the ZephyrContext")
    try:
        inspect.signature(main).bind(None)
    except TypeError:
        raise UsageError(f"{script}: main must take one argument, the ZephyrContext") from None
    except ValueError:
        pass  # a builtin or C function without a signature: just call it
    context = ZephyrContext(
        backend=args.backend,
        max_workers=args.max_workers,
        chunk_storage_prefix=args.chunk_prefix,
        preserve_chunks=args.preserve_chunks,
        run_dir=args.run_dir,
    )
    with context as ctx:
        try:
            main(ctx)
        except Exception as error:
            from zephyr_arrow import ShardFailedError

            if isinstance(error, ShardFailedError):  # its message holds the worker's traceback already
                raise CommandError(str(error)) from error
            _print_user_traceback(error)
            return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> None:
    from zephyr_arrow.cli import demo

    demo.run(backend=args.backend, out=args.out, data=args.data)


def _print_user_traceback(error: BaseException) -> None:
    """The traceback from the user's script on, without the CLI's own frames."""
    tb = error.__traceback__
    import runpy

    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__):
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# Argument parsing -----------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from zephyr_arrow.execution.report import render_report
    from zephyr_arrow.execution.run_record import REPORT_FILE, RUN_FILE, RunRecord
    from zephyr_arrow.fs import filesystem
    from zephyr_arrow.store.layout import join

    fs, fs_path = filesystem(args.run_path)
    if not fs.exists(join(fs_path, RUN_FILE)):
        raise UsageError(f"{args.run_path} is not a run's directory (it has no {RUN_FILE}); give one of the directories under a run_dir")
    out = args.out or join(args.run_path, REPORT_FILE)
    text = render_report(RunRecord.open(args.run_path))
    out_fs, out_path = filesystem(out)
    with out_fs.open(out_path, "w") as target:
        target.write(text)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from zephyr_arrow.execution.context import BACKENDS

    parser = _Parser(
        prog=PROG,
        description="Lazy, sharded dataset pipelines whose chunks are Parquet files.",
        epilog="Exit codes: 0 ok, 1 the work failed (bad SQL, failing pipeline), 2 wrong command line. "
        f"'{PROG} COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('zephyr_arrow')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser(
        "demo",
        help="run the example pipeline on the data shipped with the package and query its output",
        description="Load flights and Bible passages (shipped in zephyr_arrow/datasets/), clean, deduplicate, group and join them, "
        "write Parquet, then answer a few questions over the output with DuckDB SQL and with Polars.",
    )
    demo.add_argument("--backend", choices=("local", "sync"), default="local",
                      help="local: worker processes (default); sync: everything in this process")
    demo.add_argument("--out", default="zephyr-arrow-demo", metavar="DIR",
                      help="where the Parquet output goes (default: ./zephyr-arrow-demo)")
    demo.add_argument("--data", default=None, metavar="DIR",
                      help="a folder laid out like zephyr_arrow/datasets/ (default: the one installed with the package)")
    demo.set_defaults(handler=cmd_demo)

    run = commands.add_parser(
        "run",
        help="run a pipeline script: calls its main(ctx) with a ZephyrContext built from the flags",
        description="Load SCRIPT (its top level runs, with __name__ set to '__zephyr_arrow_script__') and call "
        "its main(ctx) with a ZephyrContext built from the flags; the context closes when main returns. "
        "The script sees sys.argv == [SCRIPT, *ARGS]; put its arguments after '--'.",
    )
    run.add_argument("script", metavar="SCRIPT.py", help="a Python file that defines main(ctx)")
    run.add_argument("script_args", nargs="*", metavar="ARGS", help="arguments for the script (after '--')")
    run.add_argument("--backend", choices=BACKENDS, default="local", help="where tasks run (default: local)")
    run.add_argument("--max-workers", type=_positive_int, default=None, metavar="N",
                     help="at most N workers (default: the CPU count; ray: the cluster's)")
    run.add_argument("--chunk-prefix", default=None, metavar="URL",
                     help="where chunk files live, a path or fsspec URL (default: a temporary directory)")
    run.add_argument("--preserve-chunks", action="store_true",
                     help="keep the chunk files after the run (they are deleted by default)")
    run.add_argument("--run-dir", default=None, metavar="URL",
                     help="write each run's record and HTML report under this path or fsspec URL "
                     "(default: $ZEPHYR_ARROW_RUN_DIR, else none)")
    run.set_defaults(handler=cmd_run)

    inspect = commands.add_parser(
        "inspect",
        help="shards, rows, bytes and the unified schema of an output",
        description="Print the shards, chunks, rows, bytes on disk and the unified schema of PATH, "
        "reading only Parquet footers.",
    )
    inspect.add_argument("path", metavar="PATH", help=PATH_HELP)
    inspect.add_argument("--max-shards", type=_non_negative_int, default=20, metavar="N",
                         help="list at most N shards (default 20; 0 lists all)")
    inspect.add_argument("--union", action="store_true", help=UNION_HELP)
    inspect.set_defaults(handler=cmd_inspect)

    sql = commands.add_parser(
        "sql",
        help="run DuckDB SQL over an output, visible as the table 'data'",
        description="Run a DuckDB query over PATH, which is visible as the table 'data', and print the result.",
    )
    sql.add_argument("path", metavar="PATH", help=PATH_HELP)
    sql.add_argument("query", metavar="QUERY", help="for example \"select count(*) from data\"")
    sql.add_argument("--max-rows", type=_non_negative_int, default=100, metavar="N",
                     help="print at most N rows (default 100; 0 prints all)")
    sql.add_argument("--union", action="store_true", help=UNION_HELP)
    sql.set_defaults(handler=cmd_sql)

    report = commands.add_parser(
        "report",
        help="write the HTML report of a run recorded with run_dir",
        description="Render the run record in RUN (one run's directory under a run_dir, holding run.json and tasks.parquet) "
        "as one self-contained HTML file that opens offline.",
    )
    report.add_argument("run_path", metavar="RUN", help="a run's directory, e.g. runs/run-1a2b3c4d5e6f (a path or fsspec URL)")
    report.add_argument("-o", "--out", default=None, metavar="OUT.html", help="where to write it (default: RUN/report.html)")
    report.set_defaults(handler=cmd_report)
    add_checkpoint_commands(commands, _non_negative_int)
    return parser


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _split_script_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """For ``run``, everything after the first ``--`` belongs to the script, flags included."""
    if argv[:1] == ["run"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zephyr-arrow`` console script; returns the exit code."""
    own_args, script_args = _split_script_args(list(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser().parse_args(own_args)
        if args.command is None:
            raise UsageError(f"a command is needed: demo, run, inspect, sql, report, runs, gc or replay (see '{PROG} --help')")
        if args.command == "run":
            args.script_args = [*args.script_args, *script_args]
        return args.handler(args) or 0
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the CLI's contract: a message, no traceback
        from zephyr_arrow import ZephyrError

        known = isinstance(error, (CommandError, ZephyrError))
        message = str(error) if known else f"{type(error).__name__}: {error}"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
