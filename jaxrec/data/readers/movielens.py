"""MovieLens (GroupLens) raw releases.

=========  =================================================  ==================================
release    ratings                                            movies (title, genres)
=========  =================================================  ==================================
100K       ``u.data``: ``user\\titem\\trating\\tts``               ``u.item``: ``id|title|date||url|19 flags``
                                                              (Latin-1), genre names in ``u.genre``
1M / 10M   ``ratings.dat``: ``user::item::rating::ts``          ``movies.dat``: ``id::title::A|B``
20M+       ``ratings.csv`` (header userId,movieId,rating,ts)  ``movies.csv``: movieId,title,genres
=========  =================================================  ==================================

``path`` is the release folder or its ratings file; ``meta`` overrides the movies file. Titles go to
``title``, genres to ``categories``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow as pa

from jaxrec.data.readers import columnar
from jaxrec.data.readers.common import (Columns, InteractionLog, RawInteractions, integer_id, iter_lines, to_float,
                                        to_int)
from jaxrec.errors import DataError

RATINGS_FILES = ("u.data", "ratings.dat", "ratings.csv")
MOVIES_FILES = {"u.data": "u.item", "ratings.dat": "movies.dat", "ratings.csv": "movies.csv"}
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
NO_GENRE = "(no genres listed)"
FIELDS = ("user", "item", "rating", "timestamp")


def _ratings_file(path: Path) -> Path:
    if path.is_dir():
        for name in RATINGS_FILES:
            if (path / name).is_file():
                return path / name
        raise DataError(f"{path}: no MovieLens ratings file found (expected one of {', '.join(RATINGS_FILES)})")
    if path.name not in RATINGS_FILES:
        raise DataError(f"{path}: not a MovieLens ratings file (expected one of {', '.join(RATINGS_FILES)})")
    return path


def read(path: Path, meta: Path | None = None) -> RawInteractions:
    ratings = _ratings_file(path)
    movies = meta or ratings.with_name(MOVIES_FILES[ratings.name])
    columns = columnar.columnar_or_lines(lambda: _ratings_columnar(ratings), lambda: _ratings_lines(ratings))
    item_meta = _read_movies(movies) if movies.is_file() else {}
    name = ratings.parent.name or "movielens"
    info = {"format": "movielens", "input": str(ratings), "meta": str(movies) if movies.is_file() else None}
    return RawInteractions.from_columns(columns, name, info, item_meta)


def _ratings_columnar(path: Path) -> Columns:
    types = {"user": columnar.IDS, "item": columnar.IDS, "rating": pa.float64(), "timestamp": pa.int64()}
    if path.name == "u.data":
        table = columnar.read_csv(path, FIELDS, types=types, delimiter="\t", quoted=False)
    elif path.name == "ratings.dat":  # `::` read as `:` with an empty field in each gap
        names = ("user", "gap1", "item", "gap2", "rating", "gap3", "timestamp")
        table = columnar.read_csv(path, names, types=types, delimiter=":", quoted=False)
        for gap in ("gap1", "gap2", "gap3"):
            columnar.empty(table[gap])
    else:
        table = columnar.read_csv(path, FIELDS, types=types, skip_rows=1)
    return Columns(users=columnar.digit_ids(table["user"]), items=columnar.digit_ids(table["item"]),
                   timestamps=columnar.ints(table["timestamp"]), ratings=columnar.floats(table["rating"]))


def _ratings_lines(path: Path) -> Columns:
    """The line loop: every line's four fields checked in order (the first bad line raises)."""
    if path.name == "u.data":
        split, header = (lambda line: line.split("\t")), False
    elif path.name == "ratings.dat":
        split, header = (lambda line: line.split("::")), False
    else:
        split, header = (lambda line: next(csv.reader([line]))), True
    log = InteractionLog(with_timestamps=True, with_ratings=True)
    for lineno, line in iter_lines(path, "auto"):
        if header and lineno == 1:
            continue
        fields = split(line)
        if len(fields) != 4:
            raise DataError(f"{path}:{lineno}: expected 4 fields user, item, rating, timestamp; got {line[:60]!r}")
        user, item, rating, ts = (f.strip() for f in fields)
        log.add(integer_id(path, lineno, "user id", user), integer_id(path, lineno, "item id", item),
                to_int(path, lineno, "timestamp", ts), to_float(path, lineno, "rating", rating))
    return log.columns()


def _read_movies(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if path.name == "u.item":
        genres = _ml100k_genres(path.with_name("u.genre"))
        for lineno, line in iter_lines(path, "auto"):
            fields = line.split("|")
            if len(fields) < 5 + len(genres):
                raise DataError(f"{path}:{lineno}: expected 'id|title|date||url|' and {len(genres)} genre flags, "
                                f"got {len(fields)} fields")
            flags = fields[-len(genres):]
            out[fields[0].strip()] = _movie(fields[1], [g for g, f in zip(genres, flags) if f.strip() == "1"])
        return out
    for lineno, line in iter_lines(path, "auto"):
        if path.suffix == ".csv":
            if lineno == 1:
                continue
            fields = next(csv.reader([line]))
        else:
            fields = line.split("::")
        if len(fields) != 3:
            raise DataError(f"{path}:{lineno}: expected 3 fields movie id, title, genres; got {line[:60]!r}")
        out[fields[0].strip()] = _movie(fields[1], [g for g in fields[2].split("|") if g and g != NO_GENRE])
    return out


def _movie(title: str, genres: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {"title": " ".join(title.split())}
    if genres:
        record["categories"] = genres
    return record


def _ml100k_genres(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return ML100K_GENRES
    by_index = {}
    for lineno, line in iter_lines(path, "auto"):
        name, _, index = line.rpartition("|")
        by_index[to_int(path, lineno, "genre index", index)] = name
    return tuple(by_index[i] for i in sorted(by_index))
