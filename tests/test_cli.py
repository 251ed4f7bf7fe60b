"""The zephyr-arrow command, run as a user runs it: in a subprocess, checked by exit code and output."""

from __future__ import annotations

import doctest
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import Dataset, ZephyrContext
from zephyr_arrow.cli import text_table

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO / "zephyr_arrow" / "datasets"
FLIGHTS = DATASETS / "nycflights13" / "flights_2013_01_07.parquet"
AIRLINES = DATASETS / "nycflights13" / "airlines.csv"
AIRPORTS = DATASETS / "nycflights13" / "airports.csv"
KJV = DATASETS / "kjv" / "kjv_passages.parquet"


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "zephyr_arrow.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error a failed command printed: exactly one line on stderr, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("zephyr-arrow: error: ")
    return lines[0]


def parse_table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """A table printed by the CLI (header, dashes, rows, "(N rows)") as its header and cells."""
    header = [c.strip() for c in lines[0].split(" | ")]
    assert set(lines[1]) <= {"-", "+"}
    rows = []
    for line in lines[2:]:
        if line.startswith("("):
            return header, rows
        rows.append([c.strip() for c in line.split(" | ")])
    raise AssertionError(f"no row count after the table: {lines}")


def same(cell: str, value) -> bool:
    if value is None:
        return cell == "NULL"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return cell == str(value)
    return abs(float(cell) - value) < 1e-9 if isinstance(value, float) else int(cell) == value


def assert_table(table: tuple[list[str], list[list[str]]], columns: list[str], expected: list[tuple]) -> None:
    header, rows = table
    assert header == columns
    assert len(rows) == len(expected), (rows, expected)
    for row, want in zip(rows, expected):
        assert all(same(c, v) for c, v in zip(row, want, strict=True)), (row, want)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """One output in every shape PATH can take: saved refs, one file, a directory, a glob."""
    root = tmp_path_factory.mktemp("outputs")
    rows = [{"id": i, "lang": ["en", "de", None][i % 3], "score": i / 10} for i in range(30)]
    with ZephyrContext(backend="sync", chunk_storage_prefix=str(root / "chunks")) as ctx:
        refs = ctx.execute(Dataset.from_list(rows, num_shards=3).map(lambda r: r))
        refs.save(str(root / "saved"))
        ctx.execute(Dataset.from_list(rows, num_shards=3).write_parquet(str(root / "files" / "part-{shard}.parquet")))
    (root / "files" / "_SUCCESS").touch()  # ignored, as Parquet readers ignore it
    return {"rows": rows, "saved": root / "saved", "dir": root / "files", "file": root / "files" / "part-0.parquet",
            "glob": str(root / "files" / "part-*.parquet")}


# Help and usage errors --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["demo"], ["run"], ["inspect"], ["sql"]])
def test_help_everywhere(command):
    result = cli(*command, "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "usage: zephyr-arrow" in result.stdout
    if not command:
        assert all(name in result.stdout for name in ["demo", "run", "inspect", "sql", "Exit codes"])


def test_installed_console_script():
    script = shutil.which("zephyr-arrow", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("zephyr-arrow is not installed next to this Python (pip install -e . installs it)")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "inspect" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "a command is needed"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["sql", "x"], "the following arguments are required: QUERY"),
        (["inspect", "x", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "s.py", "--max-workers", "0"], "--max-workers: expected a positive integer, got '0'"),
        (["run", "s.py", "--backend", "spark"], "invalid choice: 'spark'"),
        (["demo", "--backend", "ray"], "invalid choice: 'ray'"),
        (["inspect", "/no/such/path"], "/no/such/path: no such file or directory"),
        (["sql", "/no/such/path", "select 1"], "/no/such/path: no such file or directory"),
        (["inspect", "/no/such/*.parquet"], "no Parquet files match"),
        (["run", "/no/such/script.py"], "/no/such/script.py: no such file"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, message):
    result = cli(*args)
    assert result.returncode == 2
    assert message in one_line_error(result)


def test_empty_directory_is_a_usage_error(tmp_path):
    result = cli("inspect", str(tmp_path))
    assert result.returncode == 2 and "no .parquet files" in one_line_error(result)


def test_docstring_examples():
    result = doctest.testmod(text_table)
    assert result.attempted > 0 and result.failed == 0


# inspect ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, kind, num_shards", [
    ("saved", "a saved ShardRefs directory", 3),
    ("dir", "a directory of 3 Parquet file(s)", 3),
    ("glob", "3 Parquet file(s) matching", 3),
    ("file", "a Parquet file", 1),
])
def test_inspect_every_kind_of_path(outputs, shape, kind, num_shards):
    result = cli("inspect", str(outputs[shape]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert kind in lines[0]
    num_rows = len(outputs["rows"]) if num_shards == 3 else 10
    files = list(Path(outputs["saved"] if shape == "saved" else outputs["dir"]).rglob("*.parquet"))[:num_shards]
    assert re.match(rf"shards: {num_shards}  chunks: {num_shards}  rows: {num_rows}  bytes: [\d,]+ ", lines[1])
    total_bytes = int(lines[1].split("bytes: ")[1].split()[0].replace(",", ""))
    if shape != "file":
        assert total_bytes == sum(f.stat().st_size for f in files)
    assert lines[2].startswith("schema (3 columns")
    assert lines[3:6] == ["  id: int64", "  lang: string", "  score: double"]
    header, rows = parse_table(lines[6:])
    assert header == ["shard", "chunks", "rows", "bytes"] and len(rows) == num_shards
    assert sum(int(r[2]) for r in rows) == num_rows


def test_inspect_shows_the_unified_schema_and_limits_the_shard_list(tmp_path):
    pq.write_table(pa.table({"a": pa.array([1], pa.int32())}), tmp_path / "0.parquet")
    pq.write_table(pa.table({"a": [2.5], "b": ["x"]}), tmp_path / "1.parquet")
    result = cli("inspect", str(tmp_path), "--max-shards", "1")
    assert result.returncode == 0, result.stderr
    assert "  a: double\n  b: string\n" in result.stdout
    assert "(first 1 row; more not shown)" in result.stdout


def test_inspect_reads_only_footers(tmp_path):
    # Every data page is overwritten with garbage; the footer, all inspect reads, is intact.
    path = tmp_path / "data" / "part-0.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"id": list(range(5000)), "text": [f"row {i}" for i in range(5000)]}), path, row_group_size=1000)
    data = bytearray(path.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")  # the file ends: footer, its length, PAR1
    data[4:footer_start] = b"\xff" * (footer_start - 4)
    path.write_bytes(bytes(data))
    assert cli("sql", str(path.parent), "select sum(id) from data").returncode == 1  # the data really is unreadable
    result = cli("inspect", str(path.parent))
    assert result.returncode == 0, result.stderr
    assert "rows: 5,000" in result.stdout and "id: int64" in result.stdout and "text: string" in result.stdout


def test_inspect_a_file_that_is_not_parquet_exits_1():
    result = cli("inspect", str(AIRLINES))
    assert result.returncode == 1
    assert f"{AIRLINES} is not a readable Parquet file" in one_line_error(result)


# sql --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["saved", "dir", "glob"])
def test_sql_matches_duckdb_on_the_rows(outputs, shape):
    query = "select lang, count(*) as n, sum(score) as total from data group by lang order by lang nulls last"
    result = cli("sql", str(outputs[shape]), query)
    assert result.returncode == 0, result.stderr
    con = duckdb.connect()
    con.register("data", pa.Table.from_pylist(outputs["rows"]))
    assert_table(parse_table(result.stdout.splitlines()), ["lang", "n", "total"], con.sql(query).fetchall())
    assert result.stdout.splitlines()[-1] == "(3 rows)"


def test_sql_max_rows(outputs):
    result = cli("sql", str(outputs["saved"]), "select id from data order by id", "--max-rows", "4")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.strip() for line in lines[2:6]] == ["0", "1", "2", "3"]
    assert lines[6] == "(first 4 rows; more not shown)"


def test_sql_max_rows_defaults_to_100_and_0_shows_all(outputs):
    query = "select i from range(150) t(i) order by i"
    lines = cli("sql", str(outputs["saved"]), query).stdout.splitlines()
    assert [int(line) for line in lines[2:-1]] == list(range(100)) and lines[-1] == "(first 100 rows; more not shown)"
    lines = cli("sql", str(outputs["saved"]), query, "--max-rows", "0").stdout.splitlines()
    assert [int(line) for line in lines[2:-1]] == list(range(150)) and lines[-1] == "(150 rows)"


def test_hidden_and_underscore_files_in_a_directory_are_skipped(outputs, tmp_path):
    shutil.copytree(outputs["dir"], tmp_path / "files")
    stray = pa.table({"id": [1000], "lang": ["xx"], "score": [9.9]})
    for name in [".part-9.parquet", "_part-8.parquet", ".hidden/part-7.parquet", "_temporary/part-6.parquet"]:
        (tmp_path / "files" / name).parent.mkdir(exist_ok=True)
        pq.write_table(stray, tmp_path / "files" / name)
    result = cli("sql", str(tmp_path / "files"), "select count(*) as n, max(id) as top from data")
    assert result.returncode == 0, result.stderr
    assert_table(parse_table(result.stdout.splitlines()), ["n", "top"], [(30, 29)])
    inspect = cli("inspect", str(tmp_path / "files"))
    assert "a directory of 3 Parquet file(s)" in inspect.stdout and "rows: 30" in inspect.stdout


def test_path_as_an_fsspec_url(outputs, s3_prefix):
    import fsspec

    fs = fsspec.filesystem("s3")
    for file in sorted(outputs["dir"].glob("*.parquet")):
        fs.put_file(str(file), f"{s3_prefix}/files/{file.name}")
    query = "select count(*) as n, sum(score) as total from data"
    for path in (f"{s3_prefix}/files", f"{s3_prefix}/files/part-*.parquet"):
        result = cli("sql", path, query)
        assert result.returncode == 0, result.stderr
        assert_table(parse_table(result.stdout.splitlines()), ["n", "total"], [(30, sum(r["score"] for r in outputs["rows"]))])
    inspect = cli("inspect", f"{s3_prefix}/files")
    assert inspect.returncode == 0 and "rows: 30" in inspect.stdout


@pytest.mark.parametrize("query, message", [
    ("selec * from data", 'Parser Error: syntax error at or near "selec"'),
    ("select nope from data", 'Binder Error: Referenced column "nope" not found'),
    ("select * from other_table", "Catalog Error: Table with name other_table does not exist"),
])
def test_bad_sql_exits_1_with_one_line(outputs, query, message):
    result = cli("sql", str(outputs["glob"]), query)
    assert result.returncode == 1 and result.stdout == ""
    assert message in one_line_error(result)


# run --------------------------------------------------------------------------------------------


def write_script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize("backend", ["sync", "local"])
def test_run_calls_main_with_the_context_built_from_flags(tmp_path, backend):
    write_script(tmp_path, "helper.py", "def square(x):\n    return x * x\n")
    script = write_script(tmp_path, "pipeline.py", """
        import sys
        from helper import square  # a neighbour module, importable on workers too
        from zephyr_arrow import Dataset

        def main(ctx):
            n = int(sys.argv[1])
            refs = ctx.execute(Dataset.from_list(list(range(n)), num_shards=3).map(square))
            print("argv", sys.argv[1:], "backend", ctx.backend_name, "workers", ctx.max_workers)
            print("total", sum(refs.to_pylist()), "prefix", ctx.chunk_storage_prefix)
    """)
    prefix = tmp_path / "chunks"
    result = cli("run", str(script), "--backend", backend, "--max-workers", "2", "--chunk-prefix", str(prefix),
                 "--", "10", "--verbose", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"argv ['10', '--verbose'] backend {backend} workers 2" in result.stdout
    assert f"total {sum(x * x for x in range(10))} prefix {prefix}" in result.stdout
    assert list(prefix.iterdir()) == [], "chunks are deleted when the context closes"


def test_run_preserve_chunks_keeps_them(tmp_path):
    script = write_script(tmp_path, "p.py", """
        from zephyr_arrow import Dataset
        def main(ctx):
            ctx.execute(Dataset.from_list([1, 2]).map(lambda x: x))
    """)
    prefix = tmp_path / "chunks"
    result = cli("run", str(script), "--backend", "sync", "--chunk-prefix", str(prefix), "--preserve-chunks")
    assert result.returncode == 0, result.stderr
    assert len(list(prefix.rglob("*.parquet"))) == 2


def test_run_script_without_main_is_a_usage_error(tmp_path):
    script = write_script(tmp_path, "nomain.py", "x = 1\n")
    assert "defines no main(ctx)" in one_line_error(result := cli("run", str(script)))
    assert result.returncode == 2
    script = write_script(tmp_path, "noarg.py", "def main():\n    pass\n")
    result = cli("run", str(script))
    assert result.returncode == 2 and "main must take one argument" in one_line_error(result)


def test_run_script_exception_shows_the_scripts_traceback(tmp_path):
    script = write_script(tmp_path, "oops.py", """
        def main(ctx):
            return {}["missing"]
    """)
    result = cli("run", str(script), "--backend", "sync")
    assert result.returncode == 1
    assert 'oops.py", line 3, in main' in result.stderr and "KeyError: 'missing'" in result.stderr
    assert "cli.py" not in result.stderr, "the CLI's own frames are left out"


def test_run_failing_pipeline_names_stage_and_shard(tmp_path):
    script = write_script(tmp_path, "fails.py", """
        from zephyr_arrow import Dataset

        def check(x):
            if x == 2:
                raise ValueError(f"bad value {x}")
            return x

        def main(ctx):
            ctx.execute(Dataset.from_list([1, 2, 3]).map(check))
    """)
    result = cli("run", str(script), "--backend", "sync")
    assert result.returncode == 1
    assert result.stderr.startswith("zephyr-arrow: error: stage 0")
    assert "shard 1 of 3" in result.stderr and "ValueError: bad value 2" in result.stderr


def test_run_script_top_level_runs_under_its_own_name(tmp_path):
    script = write_script(tmp_path, "named.py", """
        print("top level as", __name__)

        def main(ctx):
            print("main called")

        if __name__ == "__main__":
            print("the __main__ block ran")
    """)
    result = cli("run", str(script), "--backend", "sync")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["top level as __zephyr_arrow_script__", "main called"]


def test_run_interrupted_by_ctrl_c_exits_130(tmp_path):
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    script = write_script(tmp_path, "waits.py", f"""
        import threading

        def main(ctx):
            with open({str(fifo)!r}, "w") as out:
                out.write("started")
            threading.Event().wait()
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "zephyr_arrow.cli", "run", str(script), "--backend", "sync"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    with open(fifo) as source:  # blocks until main is running
        assert source.read() == "started"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr


def test_run_exit_code_from_sys_exit(tmp_path):
    script = write_script(tmp_path, "exits.py", "import sys\ndef main(ctx):\n    sys.exit(3)\n")
    assert cli("run", str(script), "--backend", "sync").returncode == 3


# demo -------------------------------------------------------------------------------------------


def demo_answers(stdout: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The demo's answers by question number ("Q1" ...): the table printed after each question."""
    lines = stdout.splitlines()
    answers = {}
    for index, line in enumerate(lines):
        match = re.match(r"(Q\d+)\. ", line)
        if match:
            answers[match.group(1)] = parse_table(lines[index + 2 :])  # the question, the command, the table
    return answers


def oracle(query: str) -> list[tuple]:
    """DuckDB straight on the files in datasets/, written independently of the demo."""
    con = duckdb.connect()
    con.execute(f"create view flights as select * from read_parquet('{FLIGHTS}') where arr_delay is not null")
    con.execute(f"create view airlines as select * from read_csv('{AIRLINES}')")
    con.execute(f"create view airports as select * from read_csv('{AIRPORTS}')")
    con.execute(f"""create view books as
        with passages as (
            select distinct testament, book_id, book, text,
                   len(regexp_split_to_array(trim(text), '\\s+')) as words
            from read_parquet('{KJV}'))
        select book, testament, count(*) as passages, sum(words) as words from passages group by all""")
    return con.sql(query).fetchall()


EXPECTED = {
    "Q1": (["airline", "flights", "pct_late", "avg_delay"], """
        select a.name, count(*) as flights, round(100.0 * count(*) filter (where arr_delay > 15) / count(*), 1) as p,
               round(avg(arr_delay), 1)
        from flights f join airlines a using (carrier) group by a.name having count(*) >= 1000
        order by p desc, a.name limit 5"""),
    "Q2": (["dest", "airport", "flights", "late", "carriers"], """
        select dest, a.name, count(*) as n, count(*) filter (where arr_delay > 15), count(distinct carrier)
        from flights f left join airports a on f.dest = a.faa group by dest, a.name order by n desc, dest limit 6"""),
    "Q3": (["dest", "flights"], """
        select dest, count(*) from flights where dest not in (select faa from airports) group by dest order by dest"""),
    "Q4": (["book", "testament", "passages", "words"], "select * from books order by words desc, book limit 5"),
    "Q5": (["testament", "books", "passages", "words"], """
        select testament, count(*), sum(passages), sum(words) from books group by testament order by testament"""),
}


@pytest.fixture(scope="module")
def demo_sync(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return cli("demo", "--backend", "sync", "--out", str(out)), out


def test_demo_answers_match_duckdb_on_the_input(demo_sync):
    result, out = demo_sync
    assert result.returncode == 0, result.stderr
    answers = demo_answers(result.stdout)
    assert sorted(answers) == sorted(EXPECTED)
    for name, (columns, query) in EXPECTED.items():
        assert_table(answers[name], columns, oracle(query))
    assert result.stdout.count("Polars over refs.to_polars() gives the same") == len(EXPECTED)
    (late,) = oracle("select count(*) from flights where arr_delay > 15")[0]
    (cleaned,) = oracle("select count(*) from flights")[0]
    assert f"flights: {cleaned:,} rows in 4 shards" in result.stdout
    assert f"counters: flights/late={late:,}" in result.stdout
    (passages,) = oracle(f"select count(*) from '{KJV}'")[0]
    assert f"counters: passages/read={passages:,}" in result.stdout


def test_demo_writes_parquet_and_says_where(demo_sync):
    result, out = demo_sync
    assert f"Output: {out}" in result.stdout
    counts = {
        "carriers": "select count(distinct carrier) from flights",
        "destinations": "select count(distinct dest) from flights",
        "books": "select count(*) from books",
    }
    for name, query in counts.items():
        files = sorted(out.glob(f"{name}/*.parquet"))
        (num_rows,) = oracle(query)[0]
        assert len(files) == 4 and sum(pq.ParquetFile(f).metadata.num_rows for f in files) == num_rows
        assert f"{name}: wrote {num_rows:,} rows to 4 Parquet files" in result.stdout
    (num_books,) = oracle("select count(*) from books")[0]
    inspect = cli("inspect", str(out / "books"))
    assert inspect.returncode == 0 and f"rows: {num_books}" in inspect.stdout


def test_demo_on_local_workers_gives_the_same_answers(demo_sync, tmp_path):
    # --out holds the user's own files and a stale part file from an earlier demo: only the latter goes.
    out = tmp_path / "out"
    (out / "carriers").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "carriers" / "mine.csv").write_text("a,b\n")
    pq.write_table(pa.table({"stale": [1]}), out / "carriers" / "part-00099.parquet")
    result = cli("demo", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert demo_answers(result.stdout) == demo_answers(demo_sync[0].stdout)
    assert (out / "notes.txt").read_text() == "mine" and (out / "carriers" / "mine.csv").read_text() == "a,b\n"
    assert sorted(p.name for p in (out / "carriers").iterdir()) == ["_SUCCESS", "mine.csv", *(f"part-{i:05d}.parquet" for i in range(4))]


def test_demo_without_data_says_where_to_get_it(tmp_path):
    result = cli("demo", "--data", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no demo data in" in one_line_error(result)
