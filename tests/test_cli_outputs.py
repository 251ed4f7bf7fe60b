"""``zephyr-arrow sql`` and ``inspect`` on a directory that holds several outputs: an error, unless --union."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zephyr_arrow import Dataset, ZephyrContext
from zephyr_arrow.cli.main import main


def write(path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_folders_with_different_columns_are_named_and_read_together_only_with_union(tmp_path, capsys):
    write(tmp_path / "books" / "part-0.parquet", pa.table({"book": ["Genesis"], "words": [38262]}))
    write(tmp_path / "carriers" / "part-0.parquet", pa.table({"carrier": ["UA", "AA"]}))
    assert main(["sql", str(tmp_path), "select count(*) as n from data"]) == 2
    assert capsys.readouterr().err == (
        f"zephyr-arrow: error: {tmp_path} holds 2 outputs: {tmp_path}/books (columns book, words); "
        f"{tmp_path}/carriers (columns carrier). Name one of them, or pass --union to read them all as one table\n"
    )
    assert main(["inspect", str(tmp_path)]) == 2
    assert "holds 2 outputs" in capsys.readouterr().err

    assert main(["sql", "--union", str(tmp_path), "select count(*) as n, count(carrier) as carriers from data"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split() == ["3", "|", "2"]
    assert main(["inspect", str(tmp_path), "--union"]) == 0
    assert "rows: 3" in capsys.readouterr().out


def test_several_saved_outputs_are_an_error_even_with_the_same_columns(tmp_path, capsys):
    with ZephyrContext(backend="sync") as ctx:
        for name, numbers in [("evens", [0, 2]), ("odds", [1, 3, 5])]:
            ctx.execute(Dataset.from_list([{"n": n} for n in numbers], num_shards=1)).save(str(tmp_path / name))
    assert main(["sql", str(tmp_path), "select sum(n) from data"]) == 2
    assert capsys.readouterr().err.startswith(
        f"zephyr-arrow: error: {tmp_path} holds 2 outputs: {tmp_path}/evens (saved ShardRefs); {tmp_path}/odds (saved ShardRefs)."
    )
    assert main(["sql", str(tmp_path), "select sum(n) as total from data", "--union"]) == 0
    assert capsys.readouterr().out.splitlines()[2].strip() == "11"


@pytest.mark.parametrize("layout", ["one folder", "hive shards"])
def test_one_output_whose_files_differ_in_columns_is_one_table(tmp_path, capsys, layout):
    first, second = ("a.parquet", "b.parquet") if layout == "one folder" else ("shard=00000/c.parquet", "shard=00001/c.parquet")
    write(tmp_path / "out" / first, pa.table({"id": [1]}))
    write(tmp_path / "out" / second, pa.table({"id": [2], "score": [0.5]}))
    assert main(["sql", str(tmp_path), "select sum(id) as total, count(score) as scores from data"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split() == ["3", "|", "1"]
