"""Files: the user's own CSV/Parquet files become canonical tables, and bad files get clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wdrec.data.schema import STRING_LIST, DataError
from wdrec.data.sources.files import Files

RATINGS = "uid,iid,stars,ts,extra\n196,242,3,881250949,x\n186,302,3.5,891717742,y\n007,242,1,878887116,z\n"
SPLIT_HEADER = "user_id,item_id,label\n"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def write_parquet(path: Path, columns: dict) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def explicit(path: str, **kwargs) -> Files:
    return Files(
        path, user_column="uid", item_column="iid", rating_column="stars", timestamp_column="ts", **kwargs
    )


# --- round trips ---------------------------------------------------------------------------------


def test_csv_explicit_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", RATINGS)
    data = explicit(path).load(tmp_path)
    log = data.interactions
    assert list(log.columns) == ["user_id", "item_id", "rating", "timestamp"]  # extra columns are not read
    assert log["user_id"].dtype == "str" and log["item_id"].dtype == "str"
    assert log["user_id"].tolist() == ["196", "186", "007"]  # ids are text, leading zeros kept
    assert log["rating"].dtype == "float64" and log["rating"].tolist() == [3.0, 3.5, 1.0]
    assert log["timestamp"].dtype == "int64" and log["timestamp"].iloc[0] == 881250949
    assert data.users is None and data.items is None and data.predefined is None
    assert data.origins == {"interactions": path}
    assert Files(path).name == "files"


def test_csv_gz_and_other_separator(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv.gz"
    path.write_bytes(gzip.compress(RATINGS.replace(",", ";").encode()))
    log = explicit(str(path), csv_separator=";").load(tmp_path).interactions
    assert len(log) == 3 and log["rating"].sum() == 7.5


def test_parquet_integer_ids_and_iso_timestamps(tmp_path: Path) -> None:
    columns = {"user": [196, 186], "item": [242, 302], "when": ["2024-01-01", "2024-01-02T00:00:10"]}
    path = write_parquet(tmp_path / "log.parquet", columns)
    log = (
        Files(path, user_column="user", item_column="item", timestamp_column="when")
        .load(tmp_path)
        .interactions
    )
    assert log["user_id"].tolist() == ["196", "186"] and log["item_id"].dtype == "str"
    assert log["timestamp"].dtype == "int64"
    assert log["timestamp"].tolist() == [1704067200, 1704067200 + 86400 + 10]


def test_csv_iso_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user_id,item_id,t\n1,2,2024-01-01\n1,3,2024-01-01T00:01:00Z\n")
    log = Files(path, timestamp_column="t").load(tmp_path).interactions
    assert log["timestamp"].tolist() == [1704067200, 1704067260]


def test_implicit_data_ignores_unconfigured_rating(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.csv", "user_id,item_id,rating\n1,2,5\n1,3,4\n")
    data = Files(path).load(tmp_path)
    assert list(data.interactions.columns) == ["user_id", "item_id"]
    assert not data.has_ratings and not data.has_labels


def test_label_data(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.csv", "user_id,item_id,clicked\n1,2,1\n1,3,0\n")
    data = Files(path, label_column="clicked").load(tmp_path)
    assert data.has_labels and data.interactions["label"].dtype == "float32"
    assert data.interactions["label"].tolist() == [1.0, 0.0]


def test_side_tables_with_multi_valued_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", RATINGS)
    users = write(tmp_path / "users.csv", "uid,age,langs\n196,49,en|fr\n186,39,\n007,30,de\n")
    items = write(
        tmp_path / "items.csv",
        "movie,title,genres\n242,Kolya,Comedy\n302,L.A. Confidential,Crime|Film-Noir\n",
    )
    source = explicit(path, users=users, items=items, items_id_column="movie",
                      multi_valued={"genres": "|", "langs": "|"})  # fmt: skip
    data = source.load(tmp_path)
    assert list(data.users.columns) == ["user_id", "age", "langs"]
    assert data.users["user_id"].tolist() == ["196", "186", "007"]
    assert data.users["langs"].dtype == STRING_LIST
    assert data.users["langs"].tolist() == [["en", "fr"], [], ["de"]]
    assert list(data.items.columns) == ["item_id", "title", "genres"] and data.items["item_id"].dtype == "str"
    assert data.items["genres"].dtype == STRING_LIST
    assert data.items["genres"].tolist() == [["Comedy"], ["Crime", "Film-Noir"]]
    assert data.origins == {"interactions": path, "users": users, "items": items}


def test_parquet_side_table_lists_become_string_lists(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", RATINGS)
    columns = {"iid": [242, 302], "tags": [[1, 2], None], "genres": ["Comedy", "Crime|Film-Noir"]}
    items = write_parquet(tmp_path / "items.parquet", columns)
    data = explicit(path, items=items, multi_valued={"genres": "|"}).load(tmp_path)
    assert data.items["item_id"].tolist() == ["242", "302"]
    assert data.items["tags"].dtype == STRING_LIST and data.items["tags"].tolist() == [["1", "2"], []]
    assert data.items["genres"].dtype == STRING_LIST
    assert data.items["genres"].tolist() == [["Comedy"], ["Crime", "Film-Noir"]]


def test_predefined_split(tmp_path: Path) -> None:
    paths = {
        "train": write(tmp_path / "train.csv", SPLIT_HEADER + "1,10,1\n1,11,0\n2,10,1\n"),
        "val": write(tmp_path / "val.csv", SPLIT_HEADER + "1,12,1\n"),
        "test": write_parquet(tmp_path / "test.parquet", {"user_id": [2], "item_id": [13], "label": [0]}),
    }
    data = Files(label_column="label", **paths).load(tmp_path)
    assert sorted(data.predefined) == ["test", "train", "val"]
    assert [len(data.predefined[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert (
        data.predefined["test"]["user_id"].tolist() == ["2"]
        and data.predefined["test"]["label"].dtype == "float32"
    )
    assert len(data.interactions) == 5 and data.interactions["item_id"].dtype == "str"
    assert {k: data.origins[k] for k in paths} == paths
    assert all(p in data.origins["interactions"] for p in paths.values())


def test_predefined_split_beside_interactions_without_test(tmp_path: Path) -> None:
    log = write(tmp_path / "all.csv", SPLIT_HEADER + "1,10,1\n1,11,0\n")
    train = write(tmp_path / "train.csv", SPLIT_HEADER + "1,10,1\n")
    val = write(tmp_path / "val.csv", SPLIT_HEADER + "1,11,0\n")
    data = Files(log, label_column="label", train=train, val=val).load(tmp_path)
    assert sorted(data.predefined) == ["train", "val"] and len(data.interactions) == 2
    assert data.origins["interactions"] == log


def test_relative_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "ratings.csv", RATINGS)
    monkeypatch.chdir(tmp_path)
    assert len(explicit("ratings.csv").load(tmp_path).interactions) == 3
    monkeypatch.setenv("HOME", str(tmp_path))
    data = explicit("~/ratings.csv").load(tmp_path)
    assert len(data.interactions) == 3 and data.origins["interactions"] == str(tmp_path / "ratings.csv")


def test_configurable_from_yaml_through_jsonargparse(tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser

    path = write(tmp_path / "ratings.csv", RATINGS)
    parser = ArgumentParser()
    parser.add_class_arguments(Files, "source")
    config = parser.parse_string(
        f"source:\n  interactions: {path}\n  user_column: uid\n  item_column: iid\n  multi_valued: {{genres: '|'}}\n"
        f"  items: {tmp_path / 'items.csv'}\n"
    )
    source = parser.instantiate(config).source
    assert (
        isinstance(source, Files)
        and source.multi_valued == {"genres": "|"}
        and source.columns["uid"] == "user_id"
    )


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (RATINGS.replace(",3.5,", ",five,"), r"ratings\.csv: column 'stars': expected numbers, found 'five'"),
        (RATINGS.replace("186,302", ",302"), r"ratings\.csv: column 'uid': 1 missing ids \(rows \[1\]\)"),
        (RATINGS.replace("891717742", "yesterday"), r"ratings\.csv: column 'ts': expected epoch seconds or ISO"),
        (RATINGS.replace("uid,iid,stars", "uid,iid,score"), r"ratings\.csv: column 'stars': missing; .*found \['uid', 'iid', 'score'"),
        (RATINGS.replace("007,242", "196,242").replace("878887116", "881250949"),
         r"ratings\.csv: 1 duplicate interactions on \['user_id', 'item_id', 'timestamp'\] \(first: user '196', item '242'\)"),
        ("uid,iid,stars,ts\n", r"ratings\.csv: no interactions: the table is empty"),
    ],
    ids=["text-rating", "missing-id", "bad-timestamp", "missing-column", "duplicate", "header-only"],
)  # fmt: skip
def test_bad_csv_is_named(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "ratings.csv", text)
    with pytest.raises(DataError, match=match):
        explicit(path).load(tmp_path)


def test_duplicates_can_be_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.csv", "user_id,item_id\n1,2\n1,2\n1,3\n")
    assert len(Files(path, on_duplicate="drop").load(tmp_path).interactions) == 2


def test_bad_label_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.csv", "user_id,item_id,clicked\n1,2,1\n1,3,2\n")
    with pytest.raises(DataError, match=r"clicks\.csv: column 'clicked': expected 0/1 labels"):
        Files(path, label_column="clicked").load(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere\.csv: file not found"):
        Files(str(tmp_path / "nowhere.csv")).load(tmp_path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"ratings\.txt: unsupported file type; expected .*\.csv, \.csv\.gz, \.parquet"
    ):
        Files(write(tmp_path / "ratings.txt", RATINGS))


@pytest.mark.parametrize("name", ["ratings.csv", "ratings.parquet"])
def test_zero_byte_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).touch()
    with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: empty file \(0 bytes\)"):
        Files(str(tmp_path / name)).load(tmp_path)


def test_truncated_parquet(tmp_path: Path) -> None:
    path = tmp_path / "ratings.parquet"
    write_parquet(path, {"user_id": ["1", "2"], "item_id": ["3", "4"]})
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(
        DataError, match=r"ratings\.parquet: cannot read as parquet \(truncated or corrupt\?\)"
    ):
        Files(str(path)).load(tmp_path)


def test_corrupt_gzip_csv(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"ratings\.csv\.gz: cannot read as csv"):
        Files(str(path)).load(tmp_path)


def test_parquet_with_text_ratings(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "log.parquet", {"user_id": ["1"], "item_id": ["2"], "r": ["good"]})
    with pytest.raises(DataError, match=r"log\.parquet: column 'r': expected numbers, found 'good'"):
        Files(path, rating_column="r").load(tmp_path)


def test_unknown_multi_valued_column(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", RATINGS)
    items = write(tmp_path / "items.csv", "iid,genres\n242,Comedy\n")
    with pytest.raises(
        DataError, match=r"items\.csv: column 'genre': .* in no table; found items: \['item_id', 'genres'\]"
    ):
        explicit(path, items=items, multi_valued={"genre": "|"}).load(tmp_path)


def test_duplicated_side_table_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", RATINGS)
    users = write(tmp_path / "users.csv", "uid,age\n196,49\n196,50\n")
    with pytest.raises(
        DataError, match=r"users\.csv: column 'uid': ids must be unique, found 1 repeats \(first: '196'\)"
    ):
        explicit(path, users=users).load(tmp_path)


def test_side_table_without_its_id_column(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", RATINGS)
    items = write(tmp_path / "items.csv", "movie,title\n242,Kolya\n")
    with pytest.raises(DataError, match=r"items\.csv: column 'iid': missing; .*found \['movie', 'title'\]"):
        explicit(path, items=items).load(tmp_path)


def test_row_in_two_split_files_is_refused(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", SPLIT_HEADER + "1,10,1\n")
    test = write(tmp_path / "test.csv", SPLIT_HEADER + "1,10,1\n")
    with pytest.raises(
        DataError, match=r"train\.csv \+ .*test\.csv: 1 duplicate interactions on \['user_id', 'item_id'\]"
    ):
        Files(label_column="label", train=train, test=test).load(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "give `interactions`"),
        ({"interactions": "a.csv", "test": "t.csv"}, "needs `train`"),
        ({"interactions": "a.csv", "on_duplicate": "ignore"}, "on_duplicate must be one of"),
        ({"interactions": "a.csv", "multi_valued": {"genres": "|"}}, "needs a users or items table"),
        ({"interactions": "a.csv", "rating_column": "item_id"}, "each column may be configured once"),
    ],
)
def test_bad_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Files(**kwargs)
