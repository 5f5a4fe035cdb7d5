"""``wdrec-export``: any training checkpoint → a model bundle.

The checkpoint carries the model config, the FeatureSpec and the resolved CLI config, so
nothing else is needed: the data module is rebuilt from the config's ``data`` section (for
the user and item tables) and checked against the checkpoint's FeatureSpec.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser

from wdrec.data.features import FeatureSpec
from wdrec.export.bundle import write_bundle
from wdrec.model.widedeep import WideDeep, WideDeepConfig
from wdrec.training.module import WideDeepModule


def export_checkpoint(checkpoint_path: Path, output: Path, config_path: Path | None = None) -> Path:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    for key in ("model_config", "feature_spec", "state_dict"):
        if key not in checkpoint:
            raise ValueError(f"{checkpoint_path}: not a wdrec checkpoint ({key!r} missing)")
    config_text = config_path.read_text() if config_path else checkpoint.get("wdrec_config")
    if not config_text:
        raise ValueError(f"{checkpoint_path}: holds no CLI config; pass --config")
    datamodule = datamodule_from_config(yaml.safe_load(config_text))
    spec = FeatureSpec.from_dict(checkpoint["feature_spec"])
    if datamodule.feature_spec != spec:
        raise ValueError(f"{checkpoint_path}: the data no longer yields the FeatureSpec it was trained with")
    net = WideDeep(WideDeepConfig(**checkpoint["model_config"]))
    net.load_state_dict(WideDeepModule.network_weights(checkpoint["state_dict"]))
    metadata = {"checkpoint": str(checkpoint_path), "epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")}
    return write_bundle(output, net.eval(), spec, datamodule.users_frame, datamodule.items_frame, metadata)


def datamodule_from_config(config: dict) -> L.LightningDataModule:
    """Instantiate the ``data`` section of a ``wdrec fit`` config (arguments, or a class_path)."""
    data = config.get("data", {})
    if "class_path" not in data:
        data = {"class_path": "wdrec.data.datamodule.InteractionDataModule", "init_args": data}
    parser = ArgumentParser()
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    datamodule = parser.instantiate_classes(parser.parse_object({"data": data})).data
    datamodule.prepare_data()
    datamodule.setup("predict")
    return datamodule


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wdrec-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by `wdrec fit`")
    parser.add_argument("--output", "-o", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--config", type=Path, help="config to rebuild the data from (default: the one in the checkpoint)")
    args = parser.parse_args(argv)
    try:
        bundle = export_checkpoint(args.checkpoint, args.output, args.config)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as error:
        sys.exit(f"wdrec-export: {error}")
    print(f"wrote bundle {bundle}")


if __name__ == "__main__":
    main()
