"""Worksheet history in PostgreSQL: whole versions, deltas, or a git bundle?

The seed asks: "what is the overhead of storing a BLOB of a git bundle?".
This stores one made-up but typical editing session (``--saves`` saves of a
worksheet that grows to about 40 cells, each with printed output of a few
hundred bytes to a few KB and now and then an image link; three saves in four
change one cell, one in four adds a cell) three ways, in one PostgreSQL
cluster made by salvusctl's own code, on this host:

- whole: each version whole, as JSON (jsonb; PostgreSQL compresses it
  itself, TOAST): what web/worksheets.py does;
- deltas: version 1 whole, then only the cells that changed (and the count);
  opening version v reads and applies every delta up to v;
- git bundle: the worksheet as a file in a git repository, one commit per
  save, and after each save the whole repository as ``git bundle`` in one
  bytea row (the seed's BLOB); opening version v clones the bundle and reads
  the file at that commit.

For each: the time of one save (p50, p99), the bytes on disk after the last
save (the table with its TOAST and indexes, after VACUUM) and those of its
live rows (as stored, compressed), and the time to open the newest version
and one in the middle. Jupyter keeps no history to
compare with (one checkpoint per notebook), so the three are compared with
each other; ratios are to "whole".

    python bench/history_bench.py [--saves N]

writes bench/results/history.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, percentile

WORDS = ("prime", "factor", "sum", "integral", "matrix", "kernel", "basis", "vector", "field",
         "ring", "ideal", "group", "order", "series", "limit", "root", "graph", "plot")


def editing_session(saves: int, seed: int = 7) -> list[dict]:
    """The worksheet after each save (version 1 first)."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n // 6))

    def new_cell() -> dict:
        outputs = [{"type": "stream", "name": "stdout", "text": text(rng.randint(200, 4000))}]
        if rng.random() < 0.1:
            outputs.append({"type": "image", "url": f"/blobs/{rng.getrandbits(160):040x}",
                            "width": 600})
        return {"type": "code", "code": text(rng.randint(30, 200)), "outputs": outputs}

    cells = [new_cell()]
    versions = [{"language": "sage", "cells": [dict(c) for c in cells]}]
    for _ in range(saves - 1):
        if rng.random() < 0.25 and len(cells) < 40:
            cells.insert(rng.randrange(len(cells) + 1), new_cell())
        else:
            cells[rng.randrange(len(cells))] = new_cell()
        versions.append({"language": "sage", "cells": [dict(c) for c in cells]})
    return versions


class Whole:
    name = "whole"
    table = "h_whole"

    def __init__(self, conn):
        self.conn = conn
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {self.table} (version int PRIMARY KEY, content jsonb)")

    def save(self, version: int, content: dict) -> None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"INSERT INTO {self.table} VALUES (%s, %s)",
                        (version, json.dumps(content)))

    def open(self, version: int) -> dict:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"SELECT content FROM {self.table} WHERE version = %s", (version,))
            return cur.fetchone()[0]


class Deltas(Whole):
    name = "deltas"
    table = "h_deltas"

    def __init__(self, conn):
        super().__init__(conn)
        self.last: list[dict] = []

    def save(self, version: int, content: dict) -> None:
        cells = content["cells"]
        changed = {str(i): c for i, c in enumerate(cells)
                   if i >= len(self.last) or self.last[i] != c}
        self.last = cells
        delta = content if version == 1 else {"n": len(cells), "changed": changed}
        super().save(version, delta)

    def open(self, version: int) -> dict:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"SELECT content FROM {self.table} WHERE version <= %s"
                        " ORDER BY version", (version,))
            rows = [r[0] for r in cur.fetchall()]
        cells = list(rows[0]["cells"])
        for delta in rows[1:]:
            cells = (cells + [None] * delta["n"])[:delta["n"]]
            for index, cell in delta["changed"].items():
                cells[int(index)] = cell
        return {"language": rows[0]["language"], "cells": cells}


class GitBundle:
    name = "git bundle"
    table = "h_bundle"

    def __init__(self, conn):
        self.conn = conn
        self.repo = Path(tempfile.mkdtemp(prefix="salvus-history-"))
        self.git("init", "-q")
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {self.table} (id int PRIMARY KEY, bundle bytea)")

    def git(self, *args: str, cwd: Path | None = None) -> bytes:
        return subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=b@b",
                               *args], cwd=cwd or self.repo, check=True,
                              capture_output=True).stdout

    def save(self, version: int, content: dict) -> None:
        # One cell a line: git's deltas see one changed cell as one changed line.
        lines = [json.dumps({"language": content["language"]})]
        lines += [json.dumps(c) for c in content["cells"]]
        (self.repo / "worksheet.jsonl").write_text("\n".join(lines) + "\n")
        self.git("add", "worksheet.jsonl")
        self.git("commit", "-q", "-m", f"version {version}")
        bundle = self.repo.parent / (self.repo.name + ".bundle")
        self.git("bundle", "create", "-q", str(bundle), "--all")
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"INSERT INTO {self.table} VALUES (1, %s) ON CONFLICT (id) DO UPDATE"
                        " SET bundle = EXCLUDED.bundle", (bundle.read_bytes(),))
        bundle.unlink()

    def open(self, version: int) -> dict:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"SELECT bundle FROM {self.table} WHERE id = 1")
            data = bytes(cur.fetchone()[0])
        with tempfile.TemporaryDirectory() as scratch:
            bundle = Path(scratch) / "b.bundle"
            bundle.write_bytes(data)
            self.git("clone", "-q", str(bundle), "w", cwd=Path(scratch))
            work = Path(scratch) / "w"
            commits = self.git("rev-list", "--reverse", "HEAD", cwd=work).split()
            text = self.git("show", f"{commits[version - 1].decode()}:worksheet.jsonl",
                            cwd=work).decode()
        first, *cells = text.splitlines()
        return {**json.loads(first), "cells": [json.loads(c) for c in cells]}

    def close(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)


def measure(strategy, versions: list[dict], conn) -> dict:
    times = []
    for number, content in enumerate(versions, 1):
        started = time.perf_counter()
        strategy.save(number, content)
        times.append((time.perf_counter() - started) * 1000)
    old = conn.autocommit
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"VACUUM {strategy.table}")
        cur.execute("SELECT pg_total_relation_size(%s)", (strategy.table,))
        size = cur.fetchone()[0]
        # What the live rows take (compressed as stored): the git bundle's
        # one row was replaced at each save, and its dead versions stay in
        # the files until a VACUUM FULL.
        cur.execute(f"SELECT sum(pg_column_size(t.*)) FROM {strategy.table} t")
        live = cur.fetchone()[0]
    conn.autocommit = old
    opens = {}
    for label, number in (("newest", len(versions)), ("middle", len(versions) // 2)):
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            opened = strategy.open(number)
            samples.append((time.perf_counter() - started) * 1000)
        assert opened == versions[number - 1], f"{strategy.name} opened a wrong version"
        opens[label] = percentile(samples, 50)
    return {"strategy": strategy.name, "save_p50_ms": percentile(times, 50),
            "save_p99_ms": percentile(times, 99), "stored_kb": size / 1024,
            "live_kb": live / 1024,
            "open_newest_ms": opens["newest"], "open_middle_ms": opens["middle"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=300)
    args = parser.parse_args()
    from salvusctl import appliance, postgres
    from salvusctl.datadir import DataDir
    from tests.helpers import free_base_port, kill_everything_of

    versions = editing_session(args.saves)
    raw = sum(len(json.dumps(v)) for v in versions)
    folder = Path(tempfile.mkdtemp(prefix="salvus-hbench-", dir="/tmp"))
    folder.chmod(0o755)
    rows = []
    try:
        appliance.init(folder / "data", {("database", "port"): free_base_port() + 200},
                       False, lambda _: None)
        data = DataDir(folder / "data")
        config = data.load_config()
        with postgres.temporary_server(data, config, appliance.service_account(config)):
            conn = postgres.connect(postgres.embedded_dsn(data, config))
            try:
                for kind in (Whole, Deltas, GitBundle):
                    strategy = kind(conn)
                    try:
                        rows.append(measure(strategy, versions, conn))
                    finally:
                        if isinstance(strategy, GitBundle):
                            strategy.close()
            finally:
                conn.close()
    finally:
        kill_everything_of(folder)
        shutil.rmtree(folder, ignore_errors=True)
    newest = len(json.dumps(versions[-1]))
    print(f"\n{args.saves} saves; the last version is {newest / 1024:.0f} KB of JSON, all "
          f"versions together {raw / 1024:.0f} KB")
    print(f"{'strategy':<12} {'save p50':>9} {'save p99':>9} {'on disk':>10} {'live rows':>10} "
          f"{'open newest':>12} {'open middle':>12}")
    for row in rows:
        print(f"{row['strategy']:<12} {row['save_p50_ms']:>7.2f}ms {row['save_p99_ms']:>7.2f}ms "
              f"{row['stored_kb']:>8.0f}KB {row['live_kb']:>8.0f}KB "
              f"{row['open_newest_ms']:>10.2f}ms {row['open_middle_ms']:>10.2f}ms")
    base = rows[0]
    for row in rows[1:]:
        print(f"{row['strategy']} / whole: save x{row['save_p50_ms'] / base['save_p50_ms']:.1f}, "
              f"on disk x{row['stored_kb'] / base['stored_kb']:.2f}, live rows "
              f"x{row['live_kb'] / base['live_kb']:.2f}, open newest "
              f"x{row['open_newest_ms'] / base['open_newest_ms']:.1f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "history.json").write_text(json.dumps(
        {"saves": args.saves, "raw_kb": raw / 1024, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
