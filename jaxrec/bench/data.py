"""`jaxrec bench data`: `jaxrec data prepare` at real scale against the line-loop readers it replaced.

Generates, seeded and vectorized, a MovieLens-25M-shaped ``ratings.csv`` (``--rows``, default 25M; users and
movies in ML-25M's proportions, each user's rows by movie id, >= 20 ratings a user) with its ``movies.csv``, and an
Amazon-Reviews-2023-shaped category (``--reviews`` JSON lines with review text, default 10M, over ``--items``
products, default 1M, with their meta lines). Then times ``prepare`` (dedup, ``--kcore``, first-appearance ids,
write) on each in a fresh subprocess, with the subprocess's peak RSS (``wait4``).

The peer is the same ``prepare`` of :data:`LEGACY_REV`, the last revision whose readers were pure-Python line loops,
extracted with ``git archive`` from the checkout this package runs from and imported in its place (nothing of it is
kept in the package), on the first ``--peer-rows`` rows of both inputs; ours runs on the same slices too, and the
two datasets are compared value by value (``identical_on_slice``). The ratio is our rows/s over the full files
against the peer's rows/s on the slice.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaxrec.errors import JaxrecError

if TYPE_CHECKING:  # imported where used: `jaxrec bench` registers every benchmark at start-up
    import pyarrow as pa

LEGACY_REV = "9e25de2580a7da0e048a485ba7d13586b63e2f8c"  # the line-loop readers' last revision
ML25M = {"rows": 25_000_095, "users": 162_541, "movies": 59_047, "listed_movies": 62_423}
ML_RATINGS = np.arange(1, 11) / 2  # 0.5 ... 5.0
ML_RATING_P = np.array([1.6, 3.1, 1.6, 6.6, 4.9, 19.6, 12.5, 26.5, 8.7, 14.5]) / 99.6  # ML-25M's mix, roughly
WORDS = ("soft light great small blue easy works fine quality price color size fits well after months daily use "
         "battery strong smell gift box cable sound clean water fast cheap perfect return broke love bag ").split()
GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
# runs `prepare` in a child (whose cwd is not a checkout, so PYTHONPATH picks the jaxrec to import); its peak RSS is
# VmHWM, the high-water mark of its own memory map (ru_maxrss would start at the parent's RSS at fork)
RUNNER = """
import json, sys, time
start = time.perf_counter()
import jaxrec
from jaxrec.data.commands import prepare
imported = time.perf_counter()
fmt, path, out, kcore = sys.argv[1:5]
ds = prepare(fmt, path, out, kcore=int(kcore), overwrite=True)
print(json.dumps({"jaxrec": jaxrec.__file__, "import_s": imported - start, "prepare_s": time.perf_counter() - imported,
                  "steps": ds.info["processing"]["steps"],
                  "peak_rss_kib": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])}))
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data prepare on a MovieLens-25M- and an Amazon-2023-shaped input vs the "
                                    "line-loop readers",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--work-dir", default=None, help="where the inputs and outputs go (default: a temp dir, removed)")
    p.add_argument("--rows", type=int, default=25_000_000, help="MovieLens ratings rows")
    p.add_argument("--reviews", type=int, default=10_000_000, help="Amazon reviews")
    p.add_argument("--items", type=int, default=1_000_000, help="Amazon products")
    p.add_argument("--peer-rows", type=int, default=1_000_000, help="rows of each input the peer reads")
    p.add_argument("--kcore", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-peer", action="store_true", help="skip the line-loop peer")
    p.set_defaults(func=run)


# ----------------------------------------------------------------- generation
def _write_lines(f, *parts) -> None:
    """Write rows joined from Arrow string arrays and literal strings (one row per element, no Python loop)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    joined = pc.binary_join_element_wise(*parts, "\n", "").cast(pa.large_string())
    for chunk in joined.chunks if isinstance(joined, pa.ChunkedArray) else [joined]:
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset:chunk.offset + len(chunk) + 1]
        f.write(memoryview(chunk.buffers()[2])[offsets[0]:offsets[-1]])


def _text(values) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pa.array(values), pa.string())


def _pool(rng: np.random.Generator, size: int, words: tuple[int, int]) -> list[str]:
    """``size`` random phrases of ``words`` (low, high) words."""
    lengths = rng.integers(*words, size)
    picks = rng.integers(0, len(WORDS), lengths.sum())
    cuts = np.cumsum(lengths)[:-1]
    return [" ".join(WORDS[w] for w in chunk) for chunk in np.split(picks, cuts)]


def _codes(rng: np.random.Generator, n: int, prefix: str, length: int) -> pa.Array:
    """``n`` distinct random upper-case ids of ``prefix`` + ``length`` characters (Amazon's style)."""
    import pyarrow as pa

    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", dtype=np.uint8)
    while True:
        chars = alphabet[rng.integers(0, 32, (n, length))]
        ids = np.char.add(prefix.encode(), chars.view(f"S{length}").ravel())
        if np.unique(ids).size == n:
            return pa.array(ids, pa.binary()).cast(pa.string())


def _lengths(rng: np.random.Generator, users: int, rows: int, minimum: int, sigma: float) -> np.ndarray:
    """int64 [users] heavy-tailed (log-normal) row counts >= ``minimum`` summing to ``rows``."""
    weight = rng.lognormal(0.0, sigma, users)
    extra = np.floor(weight / weight.sum() * (rows - minimum * users)).astype(np.int64)
    extra[: rows - minimum * users - int(extra.sum())] += 1
    return minimum + extra


def make_movielens(folder: Path, rows: int, seed: int) -> dict:
    """ratings.csv (``userId,movieId,rating,timestamp``, by user then movie id) and movies.csv."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    users = max(2, round(rows * ML25M["users"] / ML25M["rows"]))
    movies = max(4 * rows // users, round(rows * ML25M["movies"] / ML25M["rows"]))  # small runs: room to rate
    listed = round(movies * ML25M["listed_movies"] / ML25M["movies"])
    movie_ids = np.sort(rng.choice(np.arange(1, 4 * listed), listed, replace=False))
    popularity = 1.0 / (np.arange(movies) + 10.0) ** 0.9
    rated = movie_ids[rng.permutation(listed)[:movies]]  # the movie ids with ratings, most popular first
    lengths = np.minimum(_lengths(rng, users, rows, min(20, rows // users), 1.2), movies)
    span = int(movie_ids[-1]) + 1
    key = np.repeat(np.arange(1, users + 1, dtype=np.int64), lengths) * span
    key += rated[rng.choice(movies, key.size, p=popularity / popularity.sum())]
    for _ in range(100):  # a user rates a movie once: redraw repeats uniformly until none is left
        key.sort()  # each user's rows by movie id, like ML-25M
        repeat = np.flatnonzero(key[1:] == key[:-1]) + 1
        if repeat.size == 0:
            break
        key[repeat] = key[repeat] // span * span + rated[rng.integers(0, movies, repeat.size)]
    user, movie = key // span, key % span
    rows = key.size
    del key
    start = rng.integers(789_652_009, 1_574_327_703, users)  # ML-25M's first and last rating times
    labels = pa.array([f"{r:.1f}" for r in ML_RATINGS])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ratings.csv", "wb") as f:
        f.write(b"userId,movieId,rating,timestamp\n")
        for lo in range(0, rows, 2_000_000):
            hi = min(rows, lo + 2_000_000)
            ts = np.minimum(start[user[lo:hi] - 1] + rng.integers(0, 86_400 * 400, hi - lo), 1_574_327_703)
            rating = labels.take(pa.array(rng.choice(10, hi - lo, p=ML_RATING_P)))
            _write_lines(f, _text(user[lo:hi]), ",", _text(movie[lo:hi]), ",", rating, ",", _text(ts))
    titles = _pool(rng, listed, (1, 5))
    genres = ["|".join(rng.choice(GENRES, rng.integers(1, 4), replace=False)) for _ in range(listed)]
    with open(folder / "movies.csv", "w", encoding="utf-8") as f:
        f.write("movieId,title,genres\n")
        f.writelines(f'{m},"{t.title()}, The ({1900 + m % 120})",{g}\n' for m, t, g in zip(movie_ids, titles, genres))
    return {"rows": rows, "users": users, "movies": movies}


def make_amazon2023(folder: Path, reviews: int, items: int, seed: int) -> dict:
    """``Bench.jsonl`` (reviews with text, each user's together, not in time order) and ``meta_Bench.jsonl`` (one
    line a product)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed + 1)
    users = max(2, reviews // 4)
    user_ids, item_ids = _codes(rng, users, "A", 27), _codes(rng, items, "B0", 8)
    user = np.repeat(rng.permutation(users), _lengths(rng, users, reviews, 1, 1.0))  # grouped by user
    popularity = 1.0 / (np.arange(items) + 10.0)  # Zipf: a 5-core of ~1/3 of the reviews (1/6 of a 10% slice)
    item = rng.choice(items, reviews, p=popularity / popularity.sum())
    titles, texts = pa.array(_pool(rng, 4096, (2, 7))), pa.array(_pool(rng, 4096, (5, 90)))
    small = _text(np.arange(100))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "Bench.jsonl", "wb") as f:
        for lo in range(0, reviews, 1_000_000):
            n = min(reviews, lo + 1_000_000) - lo
            asin = item_ids.take(pa.array(item[lo:lo + n]))
            _write_lines(f, '{"rating": ', _text(rng.integers(1, 6, n)), '.0, "title": "',
                         titles.take(pa.array(rng.integers(0, 4096, n))), '", "text": "',
                         texts.take(pa.array(rng.integers(0, 4096, n))), '", "images": [], "asin": "', asin,
                         '", "parent_asin": "', asin, '", "user_id": "', user_ids.take(pa.array(user[lo:lo + n])),
                         '", "timestamp": ', _text(rng.integers(946_684_800_000, 1_694_000_000_000, n)),
                         ', "helpful_vote": ', small.take(pa.array(rng.geometric(0.5, n) - 1)),
                         ', "verified_purchase": true}')
    names = pa.array(_pool(rng, 4096, (3, 12)))
    lists = pa.array([json.dumps(_pool(rng, 4, (2, 9))) for _ in range(512)])
    stores = pa.array(_pool(rng, 512, (1, 3)))
    categories = pa.array([json.dumps(["Beauty & Personal Care", *_pool(rng, 2, (1, 3))]) for _ in range(256)])
    with open(folder / "meta_Bench.jsonl", "wb") as f:
        for lo in range(0, items, 500_000):
            n = min(items, lo + 500_000) - lo
            store = stores.take(pa.array(rng.integers(0, 512, n)))
            _write_lines(f, '{"main_category": "All Beauty", "title": "',
                         names.take(pa.array(rng.integers(0, 4096, n))),
                         '", "average_rating": 4.', small.take(pa.array(rng.integers(0, 10, n))),
                         ', "rating_number": ', small.take(pa.array(rng.integers(0, 100, n))),
                         ', "features": ', lists.take(pa.array(rng.integers(0, 512, n))),
                         ', "description": ', lists.take(pa.array(rng.integers(0, 512, n))),
                         ', "price": null, "images": [], "videos": [], "store": "', store,
                         '", "categories": ', categories.take(pa.array(rng.integers(0, 256, n))),
                         ', "details": {"Brand": "', store, '"}, "parent_asin": "', item_ids[lo:lo + n],
                         '", "bought_together": null}')
    return {"users": users, "items": items}


def _head(src: Path, dst: Path, lines: int) -> None:
    """The first ``lines`` lines of ``src`` into ``dst``."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while lines > 0:
            block = fin.read(16 << 20)
            if not block:
                break
            cut = 0
            for _ in range(min(lines, block.count(b"\n"))):
                cut = block.index(b"\n", cut) + 1
                lines -= 1
            fout.write(block if lines > 0 else block[:cut])


# ----------------------------------------------------------------- measurement
def _prepare(fmt: str, path: Path, out: Path, kcore: int, pythonpath: Path, cwd: Path) -> dict:
    """Run ``prepare`` in a fresh interpreter importing jaxrec from ``pythonpath``: wall time (interpreter start
    included), rows/s and the child's peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, fmt, str(path), str(out), str(kcore)], cwd=cwd, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise JaxrecError(f"prepare --format {fmt} {path} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["jaxrec"].startswith(str(pythonpath)):
        raise JaxrecError(f"the child imported {result['jaxrec']}, not the jaxrec under {pythonpath}")
    rows = result["steps"][0]["interactions"]
    return {"rows": rows, "wall_s": round(wall, 2), "prepare_s": round(result["prepare_s"], 2),
            "rows_per_s": round(rows / wall), "peak_rss_gib": round(result["peak_rss_kib"] / 1024 ** 2, 2),
            "steps": result["steps"]}


def _legacy(checkout: Path, dest: Path) -> str | None:
    """Extract :data:`LEGACY_REV`'s jaxrec package into ``dest``; None, or why it cannot."""
    try:
        archive = subprocess.run(["git", "-C", str(checkout), "archive", LEGACY_REV, "jaxrec"], capture_output=True,
                                 check=True).stdout
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"git archive {LEGACY_REV[:9]} in {checkout} failed: {getattr(e, 'stderr', b'') or e}"
    return None


def _same(a: Path, b: Path) -> bool:
    """Whether two prepared datasets hold the same users, items (with text), arrays and step counts."""
    from jaxrec.data.dataset import Dataset

    x, y = Dataset.load(a), Dataset.load(b)
    return (x.user_raw_ids == y.user_raw_ids and x.items == y.items
            and x.info["processing"]["steps"] == y.info["processing"]["steps"]
            and all(np.array_equal(getattr(x, k), getattr(y, k))
                    for k in ("offsets", "item_ids", "timestamps", "ratings")))


def _measure(args: argparse.Namespace, work: Path, ours: Path) -> dict:
    """Generate (or reuse) the inputs under ``work``, prepare them with ours and the peer: the benchmark's JSON."""
    from jaxrec.bench.hardware import hardware_info

    config = {k: getattr(args, k) for k in ("rows", "reviews", "items", "peer_rows", "kcore", "seed")}
    inputs = {"movielens": work / "ml" / "ratings.csv", "amazon2023": work / "amazon" / "Bench.jsonl"}
    marker = work / "inputs.json"
    generated = {}
    made_by = {k: config[k] for k in ("rows", "reviews", "items", "seed")}
    if marker.is_file() and json.loads(marker.read_text()).get("config") == made_by:
        generated = json.loads(marker.read_text())["generated"]  # same seed and sizes: the same bytes
    else:
        marker.unlink(missing_ok=True)
        makers = {"movielens": lambda: make_movielens(work / "ml", args.rows, args.seed),
                  "amazon2023": lambda: make_amazon2023(work / "amazon", args.reviews, args.items, args.seed)}
        for name, make in makers.items():
            start = time.perf_counter()
            generated[name] = {**make(), "generate_s": round(time.perf_counter() - start, 1)}
            generated[name]["file_mib"] = round(inputs[name].stat().st_size / 2 ** 20)
            print(f"jaxrec bench data: generated {inputs[name]} ({generated[name]})", file=sys.stderr)
        marker.write_text(json.dumps({"config": made_by, "generated": generated}))
    slices = {"movielens": work / "ml-slice" / "ratings.csv", "amazon2023": work / "amazon-slice" / "Bench.jsonl"}
    for name, path in slices.items():
        path.parent.mkdir(exist_ok=True)
        _head(inputs[name], path, args.peer_rows + (name == "movielens"))  # + the header
    shutil.copy(work / "ml" / "movies.csv", slices["movielens"].with_name("movies.csv"))
    shutil.copy(work / "amazon" / "meta_Bench.jsonl", slices["amazon2023"].with_name("meta_Bench.jsonl"))

    out = {"benchmark": "data", "config": config, "generated": generated}
    for name, path in inputs.items():
        out[name] = _prepare(name, path, work / "out" / name, args.kcore, ours, work)
        print(f"jaxrec bench data: {name} {out[name]['rows']:,} rows in {out[name]['wall_s']} s", file=sys.stderr)
        out[name]["slice"] = _prepare(name, slices[name], work / "out" / f"{name}-slice", args.kcore, ours, work)
    peer_error = "--no-peer" if args.no_peer else _legacy(ours, work / "legacy")
    out["peer"] = f"line-loop readers ({LEGACY_REV[:9]}) on the first {args.peer_rows:,} rows"
    if peer_error is None:
        for name, path in slices.items():
            out[f"peer_{name}"] = _prepare(name, path, work / "out" / f"{name}-legacy", args.kcore, work / "legacy",
                                           work)
            out[name]["identical_on_slice"] = _same(work / "out" / f"{name}-slice", work / "out" / f"{name}-legacy")
            out[name]["ratio"] = round(out[name]["rows_per_s"] / out[f"peer_{name}"]["rows_per_s"], 1)
            peer_rate = out[f"peer_{name}"]["rows_per_s"]
            out[name]["ratio_on_slice"] = round(out[name]["slice"]["rows_per_s"] / peer_rate, 1)
    else:
        out["peer_unavailable"] = peer_error
    ml = out["movielens"]
    out["goals"] = {"movielens_within_120_s": ml["wall_s"] <= 120,
                    "movielens_peak_rss_within_4_gb": ml["peak_rss_gib"] <= 4,
                    "ratio_at_least_10": ml.get("ratio", 0) >= 10 and out["amazon2023"].get("ratio", 0) >= 10}
    out["summary"] = {"figure": "movielens prepare rows/s", "value": ml["rows_per_s"], "peer": out["peer"],
                      "peer_value": out.get("peer_movielens", {}).get("rows_per_s"), "ratio": ml.get("ratio")}
    out["hardware"] = hardware_info()
    return out


OWNER_FILE = ".jaxrec-bench-data"  # marks a work dir this benchmark writes into (it replaces files there)


def claim_work_dir(work: Path) -> None:
    """Make ``work`` this benchmark's: a new or empty folder, or one it claimed before; a folder holding other
    files is refused (the benchmark writes ml/, amazon/, out/ ... there and would replace what they hold)."""
    if work.exists() and not work.is_dir():
        raise JaxrecError(f"--work-dir {work}: not a folder")
    if work.is_dir() and any(work.iterdir()) and not (work / OWNER_FILE).is_file():
        raise JaxrecError(f"--work-dir {work}: the folder holds files jaxrec bench data did not write; "
                          f"give an empty or new folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / OWNER_FILE).touch()


def run(args: argparse.Namespace) -> int:
    import jaxrec

    ours = Path(jaxrec.__file__).resolve().parents[1]
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="jaxrec-bench-data-"))
    claim_work_dir(work)
    try:
        out = _measure(args, work, ours)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0
