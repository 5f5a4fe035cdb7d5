"""Model cards: what each registered version was trained on, how well it does, and how it was made.

A card is Markdown, written three times at the end of ``wdrec fit`` (by
:class:`~wdrec.export.callback.RegisterModel`): as the registry version's ``description``
(the MLflow UI shows it on the version page), as the run artifact ``model_card.md`` and
as ``model_card.md`` in the bundle. It holds:

- the data: source, split and its tie rule, target, rows per split;
- the features (side, kind, wide/deep, embedding width) and the crosses, and the network;
- the validation metrics of the registered weights beside baselines measured on the same
  split with the same protocol (:mod:`wdrec.training.baselines`), and the test metrics
  when they were measured;
- training time, hardware, precision, the code's commit and the resolved config.

MLflow keeps a version's description in a ``VARCHAR(5000)`` column (its SQL stores;
PostgreSQL and MySQL refuse a longer one, SQLite stores it), so the description is cut to
:data:`MAX_DESCRIPTION` characters: the config first, whole sections at a time, then, if it
must, the rest; the artifact keeps everything.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

import wdrec
from wdrec.data.datamodule import InteractionDataModule
from wdrec.data.features import FeatureSpec
from wdrec.data.sources.files import Files
from wdrec.data.sources.movielens import MovieLens
from wdrec.data.sources.synthetic import Synthetic
from wdrec.model.widedeep import WideDeepConfig
from wdrec.training.metrics import Selection

MAX_DESCRIPTION = 5000  # MLflow's model_versions.description is VARCHAR(5000)
CARD_FILE = "model_card.md"
CONFIG_ARTIFACT = "config.yaml"  # where LogConfigToMLflow logs the resolved config
# Config sections shown first when the description cannot hold them all.
CONFIG_PRIORITY = ("seed_everything", "model", "data", "trainer")


@dataclass
class ModelCard:
    """The facts of one registered version; :func:`render` writes them as Markdown."""

    name: str  # registered model name
    run_id: str
    target: str  # implicit, binary or rating
    data: dict[str, str]  # source, split, target, rows: one line each
    spec: FeatureSpec
    network: WideDeepConfig
    selection: Selection
    validation: dict[str, float]  # val_* of the registered weights
    epoch: int | None  # the epoch those weights come from (None: unknown)
    test: dict[str, float] = field(default_factory=dict)  # test_*, when test ran
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> metric (no stage prefix) -> value
    baselines_note: str | None = None  # why there are none
    training_seconds: float | None = None
    hardware: dict[str, str] = field(default_factory=dict)
    config_yaml: str | None = None
    commit: str | None = None
    dirty: bool | None = None


# ------------------------------------------------------------------- the data
def describe_source(datamodule: Any) -> str:
    """Where the rows came from, in words: the dataset, the user's file paths, or the generator."""
    source = getattr(datamodule, "source", None)
    if isinstance(source, MovieLens):
        return f"MovieLens-{source.variant} (GroupLens ratings with user and movie features)"
    if isinstance(source, Files):
        named = {"interactions": source.interactions, "users": source.users, "items": source.items, **source.splits}
        return "files: " + ", ".join(f"{role} `{Path(path).expanduser().resolve()}`" for role, path in named.items() if path)
    if isinstance(source, Synthetic):
        return (f"synthetic (seeded generator): {source.n_users:,} users, {source.n_items:,} items, "
                f"{source.n_interactions:,} interactions, seed {source.seed}")  # fmt: skip
    if source is not None:
        return f"{source.name} ({type(source).__name__})"
    paths = {role: getattr(datamodule, attribute, None)
             for role, attribute in (("interactions", "interactions"), ("validation", "validation"),
                                     ("users", "users_path"), ("items", "items_path"))}  # fmt: skip
    listed = ", ".join(f"{role} `{path}`" for role, path in paths.items() if path)
    return f"Parquet streamed by {type(datamodule).__name__}: {listed}"


def describe_split(datamodule: Any) -> str:
    """The split and the rule that decides each row's side, ties in time included."""
    split = getattr(datamodule, "split", None)
    if split is None:
        return "the validation file as given (streamed training log, no test split)"
    fractions = "/".join(f"{f:g}" for f in getattr(datamodule, "split_fractions", ()))
    ties = f"interactions in the same second are {tie_rule(datamodule)}"
    if split == "l1o":
        return (f"`l1o` (leave-one-out): per user, ordered by time, the last interaction is test and the one "
                f"before is validation; users with fewer than 3 stay whole in train. Ties: {ties}.")  # fmt: skip
    if split == "random":
        return f"`random`: rows shuffled with seed {datamodule.seed}, cut {fractions} into train/validation/test"
    if split == "temporal":
        return f"`temporal`: one global time cut, oldest first, {fractions} into train/validation/test. Ties: {ties}."
    return f"`{split}`: the train/validation/test files as given"


def tie_rule(datamodule: Any) -> str:
    """How ``data.tie_break`` orders interactions in the same second (:mod:`wdrec.data.splits`)."""
    rule = getattr(datamodule, "tie_break", None)
    words = {
        "random": f"ordered at random (seeded by data.seed, {getattr(datamodule, 'seed', '?')}), so neither the "
        "log's order nor the ids decide which one is held out",
        "log_order": "kept in the order of the log's rows",
        "item_id": "ordered by item id, numerically when every id is a number",
    }
    return f"{words.get(rule, 'ordered by a rule wdrec does not describe')} (data.tie_break `{rule}`)"


def describe_target(datamodule: Any) -> str:
    target = datamodule.target
    if target == "implicit":
        sampling = getattr(datamodule, "negative_sampling", "uniform")
        return (f"implicit: every interaction is a positive; {datamodule.negatives} negatives per positive drawn "
                f"({sampling}) from items the user has not interacted with, fresh each epoch in training, "
                f"one fixed seeded set in validation")  # fmt: skip
    if target == "binary":
        positive, negative = datamodule.thresholds
        return f"binary: the data's 0/1 label, or rating ≥ {positive:g} → 1, ≤ {negative:g} → 0, ratings between dropped"
    return "rating: the rating itself, regression"


def split_rows(datamodule: Any) -> str:
    """Labelled rows per split (sampled negatives not counted), users and catalogue items."""
    sizes = f"{len(datamodule.users_frame):,} users, {len(datamodule.items_frame):,} catalogue items"
    if isinstance(datamodule, InteractionDataModule):
        counts = " · ".join(f"{name} {len(frame):,}" for name, frame in datamodule.splits.items())
        return f"{counts} ({sizes})"
    return f"train {datamodule.summary()['interactions']:,} (streamed; validation rows read from their file) ({sizes})"


def describe_data(datamodule: Any) -> dict[str, str]:
    return {
        "Source": describe_source(datamodule),
        "Split": describe_split(datamodule),
        "Target": describe_target(datamodule),
        "Rows": split_rows(datamodule),
    }


# ------------------------------------------------------------ the metrics
def validation_at(client: Any, run_id: str, metric: str, value: float) -> tuple[int | None, dict[str, float]]:
    """The run's ``val_*`` metrics logged with the first ``metric`` equal to ``value`` (the best
    checkpoint's score): the registered weights' own figures, and their epoch (counted from 0).
    ``(None, {})`` when the history holds no such value."""
    history = client.get_metric_history(run_id, metric)
    step = next((m.step for m in history if math.isclose(m.value, value, rel_tol=1e-6, abs_tol=1e-12)), None)
    if step is None:
        return None, {}
    names = [name for name in client.get_run(run_id).data.metrics if name.startswith("val_") or name == "epoch"]
    found = {name: [m.value for m in client.get_metric_history(run_id, name) if m.step == step] for name in names}
    at_step = {name: values[-1] for name, values in found.items() if values}
    epoch = at_step.pop("epoch", None)
    return None if epoch is None else int(epoch), at_step


# ------------------------------------------------------------- the machine
def describe_hardware(trainer: Any) -> dict[str, str]:
    """CPU model and count, the accelerator (GPU name when there is one) and the precision."""
    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()
    return {
        "CPU": f"{cpu_model()} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)",
        "Accelerator": f"{name} × {trainer.num_devices}",
        "Precision": str(trainer.precision),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def checkout_dirty() -> bool | None:
    """Whether wdrec's checkout has uncommitted changes to tracked files (None: not a checkout)."""
    try:
        result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=10, cwd=Path(wdrec.__file__).parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(result.stdout.strip()) if result.returncode == 0 else None


# ---------------------------------------------------------------- rendering
def render(card: ModelCard, limit: int | None = None) -> str:
    """The card as Markdown; with ``limit``, at most that many characters (see the module docstring)."""
    body = "\n".join([*_header(card), *_data(card), *_features(card), *_metrics(card), *_training(card)])
    if not card.config_yaml:
        return _cut(f"{body}\n- **Config:** not logged\n", limit)
    config = _compact_config(card.config_yaml)
    sections = _sections(config)
    # Room for the config: what the limit leaves once the block's other lines (its note naming every section) are in.
    budget = None if limit is None else limit - len(body) - len(_config_block("", list(sections)))
    shown, left_out = _config_within(sections, budget)
    return _cut(f"{body}\n{_config_block(shown, left_out)}", limit)


def _config_block(shown: str, left_out: list[str]) -> str:
    pointer = f"Full config: run artifact `{CONFIG_ARTIFACT}`."
    note = f" Sections not shown (description size limit): {', '.join(left_out)}." if left_out else ""
    if not shown:
        return f"- **Config:** {pointer}{note}\n"
    # A fenced block, not a collapsible <details>: the MLflow UI strips that tag and shows its contents anyway.
    return f"- **Config** (resolved; unset values left out). {pointer}{note}\n\n```yaml\n{shown}```\n"


def _header(card: ModelCard) -> list[str]:
    return [
        f"# {card.name}: model card",
        "",
        f"MLflow run `{card.run_id}` · target `{card.target}` · selected on `{card.selection.metric}` "
        f"({'higher' if card.selection.mode == 'max' else 'lower'} is better) · wdrec {wdrec.__version__}",
        "",
    ]


def _data(card: ModelCard) -> list[str]:
    return ["## Data", "", *(f"- **{key}:** {value}" for key, value in card.data.items()), ""]


def _features(card: ModelCard) -> list[str]:
    spec, net = card.spec, card.network
    widths = {e.name: e.dim for side in (net.user, net.item) for e in side.categorical + side.bags}
    lines = ["## Features", "", "| feature | side | kind | values | wide | deep |", "|---|---|---|---|---|---|"]
    for fld in spec.fields:
        kind = fld.kind if fld.kind != "numeric" else f"numeric, {fld.transform}"
        if fld.kind == "history":
            kind += f" (last {fld.max_length})"
        values = "—" if fld.is_dense else f"{spec.cardinality(fld.name) - 1:,}"
        if fld.is_dense:
            deep = "dense value" if fld.deep else "no"
        else:
            deep = f"embedding {widths[fld.name]}" if widths.get(fld.name) else "no"
        wide = "yes" if fld.wide and not fld.is_dense else "no"
        lines.append(f"| {fld.name} | {fld.side} | {kind} | {values} | {wide} | {deep} |")
    crosses = [f"{' × '.join(c.fields)} ({spec.cross_sizes[c.name]:,} weights)" for c in spec.crosses]
    lines += ["", f"**Crosses (wide part):** {'; '.join(crosses) if crosses else 'none'}.", ""]
    parts = [p for p, used in (("wide", net.use_wide), ("deep", net.use_deep)) if used]
    tower = f"deep tower {net.hidden}, {net.activation}, dropout {net.dropout:g}, batchnorm {net.batchnorm}"
    lines += [f"**Network:** {' + '.join(parts)}; wide table {net.wide_size:,} weights; {tower}; task `{net.task}`.", ""]
    return lines


def _metrics(card: ModelCard) -> list[str]:
    names = list(card.baselines)
    epoch = "" if card.epoch is None else f" after epoch {card.epoch + 1} (the registered weights)"
    lines = ["## Metrics", "", f"Validation{epoch}, beside baselines measured on the same split and protocol:", ""]
    lines += ["| metric | wdrec | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for metric, value in sorted(card.validation.items(), key=lambda kv: kv[0] != card.selection.metric):
        key = metric.removeprefix("val_")
        marker = " (selection)" if metric == card.selection.metric else ""
        cells = [_number(card.baselines[name].get(key)) for name in names]
        lines.append(f"| {metric}{marker} | {_number(value)} | " + " | ".join(cells) + " |")
    if card.baselines_note:
        lines += ["", f"No baselines: {card.baselines_note}."]
    if card.test:
        lines += ["", "Test: " + ", ".join(f"{k} {_number(v)}" for k, v in sorted(card.test.items())) + "."]
    else:
        lines += ["", "Test: not measured (`wdrec fit` evaluates on validation only; "
                      "`wdrec test --config <config> --ckpt_path <checkpoint>` measures the test split)."]  # fmt: skip
    return [*lines, ""]


def _training(card: ModelCard) -> list[str]:
    seconds = "unknown" if card.training_seconds is None else f"{card.training_seconds:,.1f} s wall-clock (`wdrec fit`)"
    if card.commit is None:
        code = "unknown (not run from a git checkout)"
    else:
        state = {True: ", dirty: uncommitted changes to tracked files", False: ", clean", None: ""}[card.dirty]
        code = f"commit `{card.commit}`{state}"
    hardware = "; ".join(f"{key} {value}" for key, value in card.hardware.items()) or "unknown"
    return ["## Training", "", f"- **Time:** {seconds}", f"- **Hardware:** {hardware}", f"- **Code:** {code}"]


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _compact_config(config_yaml: str) -> str:
    """The resolved config without its unset (null) values, short collections on one line."""

    def prune(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: prune(v) for k, v in value.items() if v is not None}
        return [prune(v) for v in value] if isinstance(value, list) else value

    try:
        loaded = yaml.safe_load(config_yaml)
    except yaml.YAMLError:
        return config_yaml
    return yaml.safe_dump(prune(loaded), default_flow_style=None, sort_keys=False, width=200, allow_unicode=True)


def _sections(config: str) -> dict[str, str]:
    """The top-level sections of a YAML document, by key, in order."""
    sections: dict[str, str] = {}
    name = ""
    for line in config.splitlines(keepends=True):
        if line[:1].strip() and not line.startswith("-"):
            name = line.split(":", 1)[0]
        sections[name] = sections.get(name, "") + line
    return sections


def _config_within(sections: dict[str, str], budget: int | None) -> tuple[str, list[str]]:
    """Whole sections within ``budget`` characters, the important first (:data:`CONFIG_PRIORITY`);
    returns them in their original order, and the names of those left out."""
    if budget is None or sum(map(len, sections.values())) <= budget:
        return "".join(sections.values()), []
    rank = {name: i for i, name in enumerate(CONFIG_PRIORITY)}
    kept, used = set(), 0
    for name in sorted(sections, key=lambda n: rank.get(n, len(rank))):
        if used + len(sections[name]) <= budget:
            kept.add(name)
            used += len(sections[name])
    return "".join(text for name, text in sections.items() if name in kept), [n for n in sections if n not in kept]


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    note = f"\n\n… cut at {limit:,} characters; the whole card is the run artifact `{CARD_FILE}`.\n"
    return text[: text.rfind("\n", 0, limit - len(note))] + note
