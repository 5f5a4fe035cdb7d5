"""The bundle: written by ``wdrec fit``, read back without pickle, and scored exactly like training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from wdrec.export.bundle import BundleError, read_bundle
from wdrec.export.scorer import Scorer, UnknownItemsError


def test_fit_leaves_a_bundle_that_scores_exactly_like_the_trained_module(trained_run) -> None:
    bundle = read_bundle(trained_run.bundle)
    scorer = Scorer(bundle)
    datamodule, module = trained_run.cli.datamodule, trained_run.cli.model
    # Offline score: the module, through the data module's own batch path, on validation rows.
    batch = next(iter(datamodule.val_dataloader()[0]))
    batch = datamodule.on_after_batch_transfer(batch, 0)
    net = bundle.net  # the best checkpoint's weights, as served
    offline = net.predict(batch)
    users = datamodule.users_frame["user_id"].to_numpy()[batch["user"].numpy()]
    items = datamodule.items_frame["item_id"].to_numpy()[batch["item"].numpy()]
    served = scorer.score_pairs(list(users), list(items))
    assert torch.allclose(offline, torch.from_numpy(served), atol=1e-5)
    assert module is not None


def test_unknown_items_are_named(trained_run) -> None:
    scorer = Scorer(read_bundle(trained_run.bundle))
    with pytest.raises(UnknownItemsError, match="no-such-item"):
        scorer.score_pairs(["1"], ["no-such-item"])


def test_a_modified_file_is_refused_with_its_name(trained_run, tmp_path: Path) -> None:
    copy = shutil.copytree(trained_run.bundle, tmp_path / "bundle")
    with open(copy / "weights.safetensors", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\\x00\\x01\\x02")
    with pytest.raises(BundleError, match="weights.safetensors"):
        read_bundle(copy)


def test_metadata_records_run_and_registered_version(trained_run) -> None:
    metadata = json.loads((trained_run.bundle / "metadata.json").read_text())
    assert metadata["run_id"] == trained_run.run_id
    assert metadata["version"] == "1"
    assert metadata["num_items"] == 1682
