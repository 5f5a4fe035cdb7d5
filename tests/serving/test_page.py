"""The demo page's server side: ``GET /``, its static files (shipped as package data) and
``GET /v1/users``. The page itself runs in a real browser in tests/browser (``make test-browser``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paths import REPO_ROOT

from serving.routers.page import CONTENT_SECURITY_POLICY
from serving.routers.users import UserIndex

PAGE_FILES = ["index.html", "app.js", "style.css", "favicon.svg"]


def test_page_files_are_found_in_the_installed_package() -> None:
    static = files("serving") / "static"
    for name in PAGE_FILES:
        assert (static / name).is_file(), name


def test_the_page_and_its_files_are_served_with_a_strict_policy(client) -> None:  # noqa: ANN001
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "style-src 'self'" in CONTENT_SECURITY_POLICY
    referenced = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert sorted(referenced) == ["static/app.js", "static/favicon.svg", "static/style.css"]
    types = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
    for path in referenced:
        response = client.get(f"/{path}")
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(types[path.removeprefix("static/")])
        assert response.headers["x-content-type-options"] == "nosniff"


def test_the_page_needs_nothing_from_elsewhere_and_no_inline_code() -> None:
    static = files("serving") / "static"
    html = (static / "index.html").read_text()
    assert "<style" not in html and "style=" not in html and not re.search(r"<script(?![^>]*\bsrc=)", html)
    for name in PAGE_FILES:
        text = (static / name).read_text()
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//|url\((?:https?:)?//|@import|fetch\(\s*[\"'`]https?:", text), name
    script = (static / "app.js").read_text()
    assert '"Content-Type"] = "application/json"' in script  # the server reads no JSON body without it


@pytest.mark.parametrize("path", ["/static/../main.py", "/static/%2e%2e/main.py", "/static/nothing.js", "/static/"])
def test_only_the_page_files_are_served(client, path: str) -> None:  # noqa: ANN001
    response = client.get(path)
    assert response.status_code == 404 and "detail" in response.json()


def test_the_page_is_not_part_of_the_api_schema_and_its_requests_are_counted(client) -> None:  # noqa: ANN001
    paths = set(client.get("/openapi.json").json()["paths"])
    assert "/v1/users" in paths and "/" not in paths and not any(p.startswith("/static") for p in paths)
    client.get("/static/app.js")
    assert 'route="/static/{path:path}",status="200"' in client.get("/metrics").text


def test_a_wheel_ships_the_page(tmp_path: Path) -> None:
    """``pip install .`` (not only ``-e``) installs the page: the files are package data in the wheel."""
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.tmp")
    shutil.copytree(REPO_ROOT / "serving", source / "serving", ignore=ignore)
    shutil.copytree(REPO_ROOT / "src" / "wdrec", source / "src" / "wdrec", ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("wdrec-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"serving/static/{name}" for name in PAGE_FILES} <= names


# ---- GET /v1/users ----------------------------------------------------------------------------


def test_users_are_found_by_prefix_shortest_first(client) -> None:  # noqa: ANN001
    answer = client.get("/v1/users", params={"prefix": "19"}).json()
    assert answer == {"users": ["19", *(f"19{d}" for d in range(10))], "total": 11}
    answer = client.get("/v1/users", params={"prefix": "1", "limit": 5}).json()
    assert answer == {"users": ["1", "10", "11", "12", "13"], "total": 111}  # 1, 10-19, 100-199
    everyone = client.get("/v1/users", params={"limit": 100}).json()
    assert everyone["total"] == client.get("/v1/model").json()["num_users"] and len(everyone["users"]) == 100
    assert client.get("/v1/users", params={"prefix": "x19"}).json() == {"users": [], "total": 0}


def test_every_found_user_is_known_and_any_other_id_is_a_cold_start(client) -> None:  # noqa: ANN001
    for user in client.get("/v1/users", params={"prefix": "7", "limit": 3}).json()["users"]:
        assert client.post("/v1/recommend", json={"user_id": user, "k": 1}).json()["cold_start"] is False
    assert client.post("/v1/recommend", json={"user_id": "x19", "k": 1}).json()["cold_start"] is True


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "query.limit"), ({"limit": 101}, "query.limit"), ({"limit": "ten"}, "query.limit"),
     ({"prefix": "9" * 257}, "query.prefix")],
)  # fmt: skip
def test_user_search_limits_are_422s_naming_the_field(client, params: dict, field: str) -> None:  # noqa: ANN001
    response = client.get("/v1/users", params=params)
    assert response.status_code == 422
    assert [problem["field"] for problem in response.json()["detail"]] == [field]


@pytest.mark.parametrize("prefix", ["%00", "%ED%A0%80", "%FF", "%25", "%F0%9F%98%80", "+", "%"])  # as sent, URL-encoded
def test_odd_prefixes_find_nobody_without_error(client, prefix: str) -> None:  # noqa: ANN001
    response = client.get(f"/v1/users?prefix={prefix}")
    assert response.status_code == 200 and response.json() == {"users": [], "total": 0}


@given(ids=st.sets(st.text("0123ab", min_size=1, max_size=4), max_size=60), prefix=st.text("0123ab", max_size=3),
       limit=st.integers(1, 10))  # fmt: skip
def test_user_index_matches_a_full_scan(ids: set[str], prefix: str, limit: int) -> None:
    expected = sorted((i for i in ids if i.startswith(prefix)), key=lambda i: (len(i), i))
    assert UserIndex(ids).search(prefix, limit) == (expected[:limit], len(expected))
