"""Wide & Deep network (Cheng et al., "Wide & Deep Learning for Recommender Systems", 2016).

    P(y = 1 | x) = sigmoid(wide(x) + deep(x) + b)

- **wide**: a linear model over sparse one-hot ids and hashed cross-products, one weight
  per id (an EmbeddingBag of width 1 in sum mode): memorisation.
- **deep**: embeddings of every categorical field, mean-pooled bags of multi-valued
  fields, and numbers, concatenated into an MLP of ``Linear → BatchNorm → activation →
  Dropout`` blocks: generalisation.

Both parts are trained jointly; the loss lives outside (see ``wdrec.training``). Plain
torch: no Lightning, no MLflow.

Notation: B batch rows, Bu user rows (B, or 1 when one user is scored against B items),
F categorical fields, L bag length, D width.

The input is a dict of tensors (built by ``FeatureSpec.assemble``): ``user.categorical``
(Bu, Fu), ``user.dense`` (Bu, Du), ``user.bag.<name>`` (Bu, L), the same for ``item.*``
with B rows, and ``wide.user`` (Bu, Wu), ``wide.item`` (B, Wi), ``wide.cross`` (B, Wc).
Because the first deep layer is linear, it is applied to each side separately and the
results summed, so a single user row broadcasts against the whole catalogue without
being copied per item. Each arch offers those parts apart (``WideArch.partial_sums``,
``DeepArch.user_share`` / ``item_share`` / ``top``, ``OverArch.deep_logit`` / ``join``, and
``DeepArch.fused`` for inference), so that serving can compute the items' parts once per
model with the network's own code; ``forward`` is built from the same parts.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["relu", "leaky_relu", "elu", "selu", "tanh", "sigmoid"]
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
WIDE_PARTS = ("wide.user", "wide.item", "wide.cross")  # the batch's wide ids, by what they depend on


@dataclass
class EmbeddingConfig:
    """One embedding table: a categorical field or a bag; ``dim == 0`` means wide-only."""

    name: str
    num_embeddings: int
    dim: int


@dataclass
class SideConfig:
    """The deep inputs of one side (user or item)."""

    categorical: list[EmbeddingConfig] = field(default_factory=list)  # column order of `<side>.categorical`
    bags: list[EmbeddingConfig] = field(default_factory=list)
    num_dense: int = 0

    @property
    def width(self) -> int:
        return sum(e.dim for e in self.categorical + self.bags) + self.num_dense


@dataclass
class Architecture:
    """The choices that shape the network, apart from the data's sizes (``model.architecture.*``
    on the command line)."""

    hidden: list[int] = field(default_factory=lambda: [256, 128, 64])
    activation: Activation = "relu"
    dropout: float = 0.1
    batchnorm: Literal["before", "after", "none"] = "before"  # relative to the activation
    output_activation: Literal["none", "relu"] = "none"  # regression: relu keeps ratings >= 0
    use_wide: bool = True
    use_deep: bool = True
    init: Literal["auto", "standard_normal"] = "auto"  # standard_normal: N(0, 1), the classic failure, for diagnostics

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        for name, allowed in (
            ("batchnorm", ("before", "after", "none")),
            ("output_activation", ("none", "relu")),
            ("init", ("auto", "standard_normal")),
        ):  # a typo would otherwise silently pick a branch (e.g. batchnorm="Before" ran as "after")
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.use_wide or self.use_deep):
            raise ValueError("at least one of use_wide and use_deep must be true")
        if self.use_deep and (not self.hidden or min(self.hidden) < 1):
            raise ValueError(f"hidden must list positive layer sizes, got {self.hidden}")


@dataclass(kw_only=True)
class WideDeepConfig(Architecture):
    """An :class:`Architecture` with the sizes the data gives it (``FeatureSpec.layout()``)."""

    wide_size: int  # rows of the wide weight table (one per sparse id, row 0 = padding)
    user: SideConfig
    item: SideConfig
    task: Literal["binary", "regression"] = "binary"
    output_bias: float = 0.0  # the deep head's starting bias: the mean rating for regression, so training starts there

    def __post_init__(self) -> None:
        if isinstance(self.user, dict):
            self.user = _side(self.user)
        if isinstance(self.item, dict):
            self.item = _side(self.item)
        super().__post_init__()
        if self.task not in ("binary", "regression"):
            raise ValueError(f"task must be one of ['binary', 'regression'], got {self.task!r}")
        if self.use_deep and self.user.width + self.item.width == 0:
            raise ValueError("the deep part has no inputs: give some feature an embedding (deep: true)")
        if self.wide_size < 1:
            raise ValueError(f"wide_size must be >= 1, got {self.wide_size}")

    @classmethod
    def from_layout(cls, layout: dict, architecture: Architecture | None = None, **kwargs: object) -> WideDeepConfig:
        """Build from ``FeatureSpec.layout()``, an architecture, and other fields (``task``,
        ``output_bias``, or architecture fields that override it)."""
        choices = {**asdict(architecture or Architecture()), **kwargs}
        return cls(wide_size=layout["wide_size"], user=_side(layout["user"]), item=_side(layout["item"]), **choices)


def _side(data: dict) -> SideConfig:
    return SideConfig(
        [EmbeddingConfig(**e) for e in data["categorical"]], [EmbeddingConfig(**e) for e in data["bags"]], data["num_dense"]
    )


class WideArch(nn.Module):
    """Linear model over sparse ids: wide(x) = sum of the ids' weights, plus a bias.

    One weight per id, gathered and summed: the same function as an ``EmbeddingBag`` of
    width 1 in sum mode, but its backward is a scatter-add instead of a sort, measured
    10x faster on CPU for a batch of 1,024 rows with 130 ids each. Id 0 is padding.
    """

    def __init__(self, config: WideDeepConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(config.wide_size))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logit = self.bias
        for part in self.partial_sums(batch).values():
            logit = logit + part  # (B|Bu,)
        return logit

    def partial_sums(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each part's share of the logit, the bias left out: ``wide.user`` (Bu,), ``wide.item``
        and ``wide.cross`` (B,). Serving sums the items' parts once per model."""
        return {key: self.sum_ids(batch[key]) for key in WIDE_PARTS}

    def sum_ids(self, ids: Tensor) -> Tensor:
        """The weights of ``ids`` (..., W) summed over the last dimension, padding (0) left out: (...,)."""
        return (self.weight[ids] * (ids > 0)).sum(-1)


class SideEmbedding(nn.Module):
    """One side's deep input: embeddings, mean-pooled bags and numbers, concatenated."""

    def __init__(self, side: str, config: SideConfig) -> None:
        super().__init__()
        self.side = side
        self.columns = [j for j, e in enumerate(config.categorical) if e.dim > 0]
        self.embeddings = nn.ModuleList(
            nn.Embedding(config.categorical[j].num_embeddings, config.categorical[j].dim) for j in self.columns
        )
        self.bag_names = [e.name for e in config.bags if e.dim > 0]
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(e.num_embeddings, e.dim, mode="mean", padding_idx=0) for e in config.bags if e.dim > 0
        )
        self.num_dense = config.num_dense

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        categorical = batch[f"{self.side}.categorical"]
        parts = [table(categorical[:, j]) for j, table in zip(self.columns, self.embeddings, strict=True)]  # (Bu, D_f)
        parts += [bag(batch[f"{self.side}.bag.{name}"]) for name, bag in zip(self.bag_names, self.bags, strict=True)]
        if self.num_dense:
            parts.append(batch[f"{self.side}.dense"])
        rows = max(p.shape[0] for p in parts)
        return torch.cat([p.expand(rows, -1) for p in parts], dim=1)  # (Bu, D_side)


class Block(nn.Module):
    """Linear → BatchNorm → activation → Dropout (BatchNorm after the activation if configured)."""

    def __init__(self, in_features: int, out_features: int, config: WideDeepConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = nn.BatchNorm1d(out_features) if config.batchnorm != "none" else nn.Identity()
        self.act = ACTIVATIONS[config.activation]()
        self.norm_first = config.batchnorm == "before"
        # SELU's self-normalisation needs AlphaDropout, which keeps mean and variance.
        self.drop = (nn.AlphaDropout if config.activation == "selu" else nn.Dropout)(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.finish(self.linear(x))

    def finish(self, h: Tensor) -> Tensor:
        """Everything after the linear map."""
        h = self.act(self.norm(h)) if self.norm_first else self.norm(self.act(h))
        return self.drop(h)

    @torch.no_grad()
    def fused(self) -> nn.Module:
        """This block for inference, equal to its eval mode up to rounding: eval-mode BatchNorm is
        ``x·scale + shift``, which before the activation folds into the linear map (one pass over
        (B, H) fewer). BatchNorm after the activation does not fold: then an eval-mode copy."""
        norm, linear = self.norm, self.linear
        if isinstance(norm, nn.Identity):
            return FusedBlock(linear.weight, linear.bias, self.act)
        if not self.norm_first or norm.running_var is None:
            return copy.deepcopy(self).eval()
        std = torch.sqrt(norm.running_var + norm.eps)
        scale = norm.weight / std if norm.affine else 1 / std  # (H,)
        shift = (norm.bias if norm.affine else 0) - norm.running_mean * scale
        return FusedBlock(linear.weight * scale.unsqueeze(1), linear.bias * scale + shift, self.act)


class FusedBlock(nn.Module):
    """Linear → activation, for inference: a :class:`Block` with its BatchNorm folded in and no
    dropout. A ReLU runs in place, on the linear map's fresh output."""

    def __init__(self, weight: Tensor, bias: Tensor, act: nn.Module) -> None:
        super().__init__()
        # On the meta device: a CPU Linear would draw its (discarded) initial weights from torch's global
        # generator, and evaluation, which fuses the network each epoch, would shift training's dropout.
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], device="meta")
        self.linear.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.linear.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.act = nn.ReLU(inplace=True) if isinstance(act, nn.ReLU) else copy.deepcopy(act)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.finish(self.linear(x))

    def finish(self, h: Tensor) -> Tensor:
        """The activation; ``h`` may be overwritten."""
        return self.act(h)


class DeepArch(nn.Module):
    """Both sides' embeddings through the MLP; returns the last hidden layer (B, H).

    The first layer is linear, so it is applied to each side apart and summed:
    ``top(user_share + item_share)``. One user row then broadcasts against the whole
    catalogue, and serving computes the items' share once per model.
    """

    def __init__(self, config: WideDeepConfig) -> None:
        super().__init__()
        self.user = SideEmbedding("user", config.user)
        self.item = SideEmbedding("item", config.item)
        self.user_width, self.item_width = config.user.width, config.item.width
        sizes = [config.user.width + config.item.width, *config.hidden]
        self.blocks = nn.ModuleList(Block(a, b, config) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        h = self.user_share(batch)  # (Bu, H)
        if self.item_width:
            h = h + self.item_share(batch)  # (B, H)
        return self.top(h)

    def user_share(self, batch: dict[str, Tensor]) -> Tensor:
        """The first layer's pre-activation from the user side, its bias included: (Bu, H), or (1, H)
        when the user side has no deep input. A new tensor."""
        linear = self.blocks[0].linear
        if not self.user_width:
            return linear.bias.unsqueeze(0).clone()  # (1, H)
        return linear.bias + F.linear(self.user(batch), linear.weight[:, : self.user_width])  # (Bu, H)

    def item_share(self, batch: dict[str, Tensor]) -> Tensor:
        """The first layer's pre-activation from the item side, bias left out: (B, H)."""
        return F.linear(self.item(batch), self.blocks[0].linear.weight[:, self.user_width :])

    def top(self, h: Tensor) -> Tensor:
        """The MLP from the first layer's pre-activation ``h`` (B, H) on: (B, H_last). A fused arch
        may overwrite ``h``."""
        first, *rest = self.blocks
        h = first.finish(h)
        for block in rest:
            h = block(h)
        return h

    def fused(self) -> DeepArch:
        """This arch for inference (every block :meth:`Block.fused`), equal to its eval mode up to
        rounding. It shares the embedding tables with this one: they are not copied."""
        fused = copy.deepcopy(self, {id(self.user): self.user, id(self.item): self.item})
        fused.blocks = nn.ModuleList(block.fused() for block in self.blocks)
        return fused


class OverArch(nn.Module):
    """Joins the parts: logit = wide + w_deep · h, then the task's output activation."""

    def __init__(self, config: WideDeepConfig) -> None:
        super().__init__()
        self.head = nn.Linear(config.hidden[-1], 1) if config.use_deep else None
        self.relu_output = config.task == "regression" and config.output_activation == "relu"

    def forward(self, wide: Tensor | None, deep: Tensor | None) -> Tensor:
        return self.join(wide, None if deep is None else self.deep_logit(deep))

    def deep_logit(self, h: Tensor) -> Tensor:
        """The deep part's logit from its last hidden layer (B, H_last): (B,)."""
        return self.head(h).squeeze(-1)

    def join(self, wide: Tensor | None, deep: Tensor | None) -> Tensor:
        """The output from the wide and deep logits (either may be absent): (B,)."""
        out = deep if wide is None else wide if deep is None else wide + deep
        return F.relu(out) if self.relu_output else out


class WideDeep(nn.Module):
    """The Wide&Deep network.

    Args:
        config: sizes from the FeatureSpec's layout plus the architecture choices.

    Returns (forward): logits (binary task) or predicted ratings (regression), shape (B,).

    Example::

        config = WideDeepConfig.from_layout(spec.layout(), hidden=[128, 64])
        net = WideDeep(config)
        logits = net(spec.assemble(users.take(u), items.take(i)))  # (B,)
    """

    def __init__(self, config: WideDeepConfig) -> None:
        super().__init__()
        self.config = config
        self.wide = WideArch(config) if config.use_wide else None
        self.deep = DeepArch(config) if config.use_deep else None
        self.over = OverArch(config)
        self._init_weights()

    def _init_weights(self) -> None:
        """Initialisation follows the activation (He for the ReLU family, Glorot for
        tanh/logistic, LeCun for SELU); the wide weights start at zero like any linear
        model's, and embeddings at N(0, 1/dim) so each vector has norm about 1. The output
        starts at ``output_bias`` (through the deep head: FTRL sets the wide bias itself)."""
        activation = self.config.activation
        for module in self.modules():
            if isinstance(module, Block):
                weight = module.linear.weight
                if self.config.init == "standard_normal":
                    nn.init.normal_(weight, 0.0, 1.0)
                elif activation in ("relu", "elu"):
                    nn.init.kaiming_normal_(weight, nonlinearity="relu")
                elif activation == "leaky_relu":
                    nn.init.kaiming_normal_(weight, a=module.act.negative_slope, nonlinearity="leaky_relu")
                elif activation == "selu":
                    nn.init.kaiming_normal_(weight, nonlinearity="linear")  # LeCun normal: Var = 1 / fan_in
                else:
                    nn.init.xavier_normal_(weight)  # Glorot: Var = 2 / (fan_in + fan_out)
                nn.init.zeros_(module.linear.bias)
            elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.embedding_dim > 1:
                nn.init.normal_(module.weight, 0.0, 1.0 / math.sqrt(module.embedding_dim))
        if self.wide is not None:
            nn.init.zeros_(self.wide.weight)
        if self.over.head is not None:
            nn.init.xavier_normal_(self.over.head.weight)
            nn.init.constant_(self.over.head.bias, self.config.output_bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        wide = self.wide(batch) if self.wide is not None else None
        deep = self.deep(batch) if self.deep is not None else None
        return self.over(wide, deep)

    @torch.inference_mode()
    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        """Probabilities (binary) or ratings (regression), in eval mode, without autograd."""
        was_training = self.training
        self.eval()
        try:
            out = self(batch)
        finally:
            self.train(was_training)
        return self.predictions(out)

    def predictions(self, out: Tensor) -> Tensor:
        """Probabilities (binary task) or ratings (regression) from the output of ``forward``."""
        return torch.sigmoid(out) if self.config.task == "binary" else out

    def wide_parameters(self) -> list[nn.Parameter]:
        return list(self.wide.parameters()) if self.wide is not None else []

    def deep_parameters(self) -> list[nn.Parameter]:
        wide = {id(p) for p in self.wide_parameters()}
        return [p for p in self.parameters() if id(p) not in wide]
