"""The model bundle: everything serving needs, in one directory, readable without pickle.

Layout (DESIGN.md, "Model bundle")::

    weights.safetensors   network weights
    model_config.json     WideDeepConfig
    feature_spec.json     the fitted FeatureSpec
    items.parquet         the catalogue: item_id, features, display fields (title, genres)
    users.parquet         known users: user_id, features, training history, all seen items
    metadata.json         run id, registered name/version, metrics, created_at, wdrec version,
                          and the sha256 of every file above

A bundle is written into a temporary sibling directory and renamed into place, and every
file is checked against its recorded sha256 on read: a truncated copy or a swapped file
is refused with the name of the file, before any request is served.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import wdrec
from wdrec.data.features import FeatureSpec
from wdrec.data.io import file_digest, read_parquet, write_parquet
from wdrec.model.widedeep import WideDeep, WideDeepConfig

FORMAT_VERSION = 1
WEIGHTS, MODEL_CONFIG, FEATURE_SPEC = "weights.safetensors", "model_config.json", "feature_spec.json"
ITEMS, USERS, METADATA = "items.parquet", "users.parquet", "metadata.json"
CONTENT = (WEIGHTS, MODEL_CONFIG, FEATURE_SPEC, ITEMS, USERS)


class BundleError(ValueError):
    """A bundle that cannot be served: missing, corrupted or inconsistent; says which file."""


@dataclass
class Bundle:
    net: WideDeep
    spec: FeatureSpec
    users: pd.DataFrame
    items: pd.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.net.config.task


def write_bundle(
    directory: Path,
    net: WideDeep,
    spec: FeatureSpec,
    users: pd.DataFrame,
    items: pd.DataFrame,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle atomically; an existing bundle at ``directory`` is replaced whole."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in net.state_dict().items()}
        save_file(state, staging / WEIGHTS)
        (staging / MODEL_CONFIG).write_text(json.dumps(asdict(net.config), indent=2))
        spec.save(staging / FEATURE_SPEC)
        write_parquet(items, staging / ITEMS)
        write_parquet(users, staging / USERS)
        meta = {
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wdrec_version": wdrec.__version__,
            "task": net.config.task,
            "num_users": len(users),
            "num_items": len(items),
            **(metadata or {}),
            "sha256": {name: file_digest(staging / name) for name in CONTENT},
        }
        (staging / METADATA).write_text(json.dumps(meta, indent=2, default=str))
        os.chmod(staging, 0o755)
        if directory.exists():
            retired = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old."))
            os.replace(directory, retired / directory.name)
            os.replace(staging, directory)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_metadata(directory: Path) -> dict[str, Any]:
    path = Path(directory) / METADATA
    if not path.is_file():
        raise BundleError(f"{directory}: not a wdrec bundle ({METADATA} missing)")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path}: corrupted ({error})") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format {metadata.get('format_version')!r}; this wdrec reads {FORMAT_VERSION}")
    return metadata


def read_bundle(directory: Path) -> Bundle:
    """Load and verify a bundle; raises :class:`BundleError` naming the bad file."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    for name in CONTENT:
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        if file_digest(path) != metadata["sha256"].get(name):
            raise BundleError(f"{path}: checksum mismatch; the bundle is corrupted or was modified after export")
    try:
        config = WideDeepConfig(**json.loads((directory / MODEL_CONFIG).read_text()))
        net = WideDeep(config)
        net.load_state_dict(load_file(directory / WEIGHTS))
        spec = FeatureSpec.load(directory / FEATURE_SPEC)
    except (SafetensorError, RuntimeError, TypeError, ValueError, KeyError) as error:
        raise BundleError(f"{directory}: weights, model config and feature spec do not fit together: {error}") from None
    if spec.layout() != _layout_of(config):
        raise BundleError(f"{directory}: {FEATURE_SPEC} does not match {MODEL_CONFIG} (different fields or sizes)")
    net.eval()
    tables = {}
    for name in (USERS, ITEMS):  # checksums can be recomputed by whoever swapped a file: parse with care too
        try:
            tables[name] = read_parquet(directory / name)
        except (pa.ArrowException, OSError) as error:
            raise BundleError(f"{directory / name}: not a readable Parquet table: {error}") from None
    return Bundle(net, spec, tables[USERS], tables[ITEMS], metadata)


def _layout_of(config: WideDeepConfig) -> dict:
    def side(s: Any) -> dict:
        return {"categorical": [asdict(e) for e in s.categorical], "bags": [asdict(e) for e in s.bags], "num_dense": s.num_dense}

    return {"wide_size": config.wide_size, "user": side(config.user), "item": side(config.item)}
