"""WideDeep, arch by arch, on hand-built batches (no data layer).

The batch layout is the one documented in ``wdrec.data.features``: ``<side>.categorical``
(rows, F) with 0 = OOV, ``<side>.bag.<name>`` (rows, L) with 0 = padding, ``<side>.dense``
(rows, D), and ``wide.user`` / ``wide.item`` / ``wide.cross`` with 0 = padding.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import pytest
import torch
from torch import Tensor, nn

from wdrec.model.widedeep import ACTIVATIONS, Block, FusedBlock, WideDeep, WideDeepConfig

WIDE_SIZE = 100
# Shaped like FeatureSpec.layout(): 2 user categoricals, 1 user bag, 1 user number;
# 1 item categorical, 1 item bag, 2 item numbers.
LAYOUT: dict = {
    "wide_size": WIDE_SIZE,
    "user": {
        "categorical": [
            {"name": "user_id", "num_embeddings": 10, "dim": 4},
            {"name": "gender", "num_embeddings": 3, "dim": 2},
        ],
        "bags": [{"name": "history", "num_embeddings": 20, "dim": 3}],
        "num_dense": 1,
    },
    "item": {
        "categorical": [{"name": "item_id", "num_embeddings": 15, "dim": 4}],
        "bags": [{"name": "genres", "num_embeddings": 7, "dim": 2}],
        "num_dense": 2,
    },
}
BAG_LENGTH = {"history": 5, "genres": 3}
WIDE_WIDTH = {"user": 2, "item": 1, "cross": 3}


def make_config(layout: dict | None = None, **kwargs: object) -> WideDeepConfig:
    return WideDeepConfig.from_layout(copy.deepcopy(layout or LAYOUT), **{"hidden": [16, 8], **kwargs})


def side_tensors(side: str, rows: int, g: torch.Generator, layout: dict | None = None) -> dict[str, Tensor]:
    """One side's deep inputs: valid random indices (0 included) and bags padded with trailing zeros."""
    spec = (layout or LAYOUT)[side]
    cols = [torch.randint(0, e["num_embeddings"], (rows,), generator=g) for e in spec["categorical"]]
    out = {
        f"{side}.categorical": torch.stack(cols, dim=1) if cols else torch.zeros(rows, 0, dtype=torch.long)
    }
    for e in spec["bags"]:
        length = BAG_LENGTH.get(e["name"], 4)
        ids = torch.randint(1, e["num_embeddings"], (rows, length), generator=g)
        keep = torch.randint(0, length + 1, (rows, 1), generator=g)  # 0..L real values, rest padding
        out[f"{side}.bag.{e['name']}"] = torch.where(torch.arange(length) < keep, ids, 0)
    out[f"{side}.dense"] = torch.randn(rows, spec["num_dense"], generator=g)
    return out


def make_batch(
    rows: int = 8, user_rows: int | None = None, seed: int = 0, layout: dict | None = None
) -> dict:
    """A valid batch; ``user_rows=1`` gives the serving shape (one user against ``rows`` items)."""
    g = torch.Generator().manual_seed(seed)
    user_rows = rows if user_rows is None else user_rows
    batch = {**side_tensors("user", user_rows, g, layout), **side_tensors("item", rows, g, layout)}
    for key, n in (("user", user_rows), ("item", rows), ("cross", rows)):
        batch[f"wide.{key}"] = torch.randint(0, WIDE_SIZE, (n, WIDE_WIDTH[key]), generator=g)
    return batch


def repeat_users(batch: dict[str, Tensor], rows: int) -> dict[str, Tensor]:
    """The same batch with its single user row copied ``rows`` times."""
    return {
        k: v.expand(rows, -1).clone() if k.startswith(("user.", "wide.user")) else v for k, v in batch.items()
    }


def blocks(net: WideDeep) -> list[Block]:
    return [m for m in net.modules() if isinstance(m, Block)]


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("rows", [1, 8])
def test_forward_returns_one_logit_per_row(rows):
    net = WideDeep(make_config())
    net.train(rows > 1)  # BatchNorm cannot train on a single row
    out = net(make_batch(rows))
    assert out.shape == (rows,)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("start_training", [True, False])
def test_predict_gives_probabilities_in_eval_and_inference_mode(start_training):
    net = WideDeep(make_config(dropout=0.5))
    batch = make_batch(32)
    net(batch)  # one training-mode pass so BatchNorm's running stats are not the defaults
    net.train(start_training)
    seen = []
    net.over.register_forward_hook(
        lambda m, args, out: seen.append(
            (torch.is_inference_mode_enabled(), any(x.training for x in net.modules()))
        )
    )

    probs = net.predict(batch)

    assert seen == [(True, False)]  # ran under inference mode, every module in eval
    assert probs.is_inference()
    assert probs.shape == (32,)
    assert ((probs > 0) & (probs < 1)).all()
    assert all(m.training == start_training for m in net.modules())  # mode left as it was
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(probs, torch.sigmoid(net(batch)))


# ----------------------------------------------------------------------------- broadcasting


@pytest.mark.parametrize("config", [{}, {"use_wide": False}, {"use_deep": False}, {"batchnorm": "after"}])
def test_one_user_row_broadcasts_like_repeated_rows(config):
    net = WideDeep(make_config(**config))
    if net.wide is not None:
        with torch.no_grad():
            net.wide.weight.normal_(generator=torch.Generator().manual_seed(0))
    net(make_batch(64, seed=1))  # non-default BatchNorm running stats
    net.eval()
    rows = 8
    one = make_batch(rows, user_rows=1, seed=2)
    many = repeat_users(one, rows)
    assert one["user.categorical"].shape[0] == 1 and many["user.categorical"].shape[0] == rows
    with torch.no_grad():
        out_one, out_many = net(one), net(many)
    assert out_one.shape == (rows,)
    torch.testing.assert_close(out_one, out_many, atol=1e-6, rtol=0)
    # and the rows really differ, so the check is not vacuous
    assert out_many.std() > 0


def test_split_first_layer_equals_mlp_over_concatenated_inputs():
    # DeepArch applies the first Linear to each side separately; that must equal the plain
    # MLP over [user embeddings, item embeddings] concatenated (user columns first).
    net = WideDeep(make_config()).eval()
    batch = make_batch(8, seed=13)
    with torch.no_grad():
        x = torch.cat([net.deep.user(batch), net.deep.item(batch)], dim=1)  # (B, Du + Di)
        assert x.shape == (8, net.config.user.width + net.config.item.width)
        h = x
        for block in net.deep.blocks:
            h = block(h)
        torch.testing.assert_close(net.deep(batch), h)
        torch.testing.assert_close(net(batch), net.wide(batch) + net.over.head(h).squeeze(-1))


# ----------------------------------------------------------------------------- the parts serving uses


def randomised(net: WideDeep, seed: int = 0) -> WideDeep:
    """``net`` with random wide weights and BatchNorm statistics (trained-looking), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if net.wide is not None:
            net.wide.weight.normal_(generator=g)
        for module in net.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.weight.normal_(1.0, 0.3, generator=g)
                module.bias.normal_(generator=g)
                module.running_mean.normal_(generator=g)
                module.running_var.uniform_(0.3, 3.0, generator=g)
    return net.eval()


def test_the_wide_part_is_its_bias_plus_the_partial_sums():
    net = randomised(WideDeep(make_config()))
    batch = make_batch(6, user_rows=1, seed=21)
    with torch.no_grad():
        parts = net.wide.partial_sums(batch)
        assert [tuple(p.shape) for p in parts.values()] == [(1,), (6,), (6,)]  # the user's part: once
        torch.testing.assert_close(net.wide(batch), net.wide.bias + parts["wide.user"] + parts["wide.item"] + parts["wide.cross"])


@pytest.mark.parametrize("config", [{}, {"batchnorm": "after"}, {"batchnorm": "none", "activation": "tanh"}])
def test_the_deep_part_is_its_top_over_the_two_shares(config):
    net = randomised(WideDeep(make_config(**config)))
    batch = make_batch(6, user_rows=1, seed=22)
    with torch.no_grad():
        user, item = net.deep.user_share(batch), net.deep.item_share(batch)
        assert user.shape == (1, 16) and item.shape == (6, 16)  # the user's share: one row for every item
        torch.testing.assert_close(net.deep(batch), net.deep.top(user + item))
        out = net.over.join(net.wide(batch), net.over.deep_logit(net.deep(batch)))
        torch.testing.assert_close(net(batch), out)
        torch.testing.assert_close(net.predict(batch), net.predictions(out))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("batchnorm", ["before", "after", "none"])
def test_a_fused_block_equals_the_block_in_eval_mode(activation, batchnorm):
    net = randomised(WideDeep(make_config(activation=activation, batchnorm=batchnorm, dropout=0.3)))
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(23))
    block = net.deep.blocks[1]
    with torch.no_grad():
        fused = block.fused()
        assert isinstance(fused, FusedBlock) == (batchnorm != "after")  # BatchNorm after the activation does not fold
        assert not fused.training and fused is not block
        torch.testing.assert_close(fused(x), block(x), atol=1e-5, rtol=1e-5)


def test_a_fused_deep_arch_shares_the_embeddings_and_leaves_the_original_alone():
    net = randomised(WideDeep(make_config()))
    batch = make_batch(6, user_rows=1, seed=24)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        fused = net.deep.fused()
        assert fused.user is net.deep.user and fused.item is net.deep.item
        assert all(isinstance(b, FusedBlock) for b in fused.blocks)
        torch.testing.assert_close(fused(batch), net.deep(batch), atol=1e-5, rtol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(isinstance(b, Block) for b in net.deep.blocks) and net.deep(batch).requires_grad


# ----------------------------------------------------------------------------- wide / deep only


def test_deep_only_has_no_wide_part():
    net = WideDeep(make_config(use_wide=False))
    assert net.wide is None
    assert net.wide_parameters() == []
    out = net(make_batch(8))
    assert out.shape == (8,)
    assert out.std() > 0


def test_wide_only_is_logistic_regression():
    # wide-only needs neither hidden layers nor deep inputs
    layout = copy.deepcopy(LAYOUT)
    for side in ("user", "item"):
        for e in layout[side]["categorical"] + layout[side]["bags"]:
            e["dim"] = 0
    net = WideDeep(make_config(layout, use_deep=False, hidden=[]))
    assert net.deep is None and net.over.head is None
    assert not any(isinstance(m, nn.Linear) for m in net.modules())

    g = torch.Generator().manual_seed(3)
    w = torch.randn(WIDE_SIZE, generator=g)
    w[0] = 1000.0  # row 0 is padding: whatever it holds must never count
    with torch.no_grad():
        net.wide.weight.copy_(w)
        net.wide.bias.fill_(0.25)

    for batch in (make_batch(8, seed=4), make_batch(8, user_rows=1, seed=5)):
        expected = []
        for r in range(8):
            total = 0.25
            for key in ("wide.user", "wide.item", "wide.cross"):
                ids = batch[key][min(r, batch[key].shape[0] - 1)]
                total += sum(w[i].item() for i in ids.tolist() if i != 0)
            expected.append(total)
        out = net(batch)
        assert out.shape == (8,)
        torch.testing.assert_close(out, torch.tensor(expected), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            net.predict(batch), torch.sigmoid(torch.tensor(expected)), atol=1e-6, rtol=0
        )


# ----------------------------------------------------------------------------- padding


def test_wide_padding_id_contributes_nothing():
    net = WideDeep(make_config(use_deep=False))
    with torch.no_grad():
        net.wide.weight.normal_(generator=torch.Generator().manual_seed(0))
        net.wide.weight[0] = 50.0
    batch = make_batch(4, seed=6)
    batch["wide.user"] = torch.tensor([[7, 0], [7, 0], [0, 0], [0, 0]])
    batch["wide.item"] = torch.tensor([[3], [3], [0], [0]])
    batch["wide.cross"] = torch.tensor([[0, 0, 0], [9, 0, 0], [0, 0, 0], [9, 0, 0]])
    out = net(batch)
    w = net.wide.weight.detach()
    expected = torch.stack([w[7] + w[3], w[7] + w[3] + w[9], torch.tensor(0.0), w[9]])
    torch.testing.assert_close(out, expected)


def test_bag_padding_is_left_out_of_the_mean():
    net = WideDeep(make_config()).eval()
    table = net.deep.item.bags[0]
    with torch.no_grad():
        table.weight[0] = 100.0  # a counted padding row would be obvious
    padded = make_batch(3, seed=7)
    padded["item.bag.genres"] = torch.tensor([[5, 0, 0], [5, 6, 0], [0, 0, 0]])
    short = {**padded, "item.bag.genres": torch.tensor([[5], [5], [0]])}  # row 0: [5] unpadded

    emb = net.deep.item(padded)[:, 4:6]  # columns after item_id (dim 4): the genres bag (dim 2)
    w = table.weight.detach()
    torch.testing.assert_close(emb[0], w[5])  # [5, 0, 0] embeds like [5]
    torch.testing.assert_close(emb[1], (w[5] + w[6]) / 2)  # mean over the 2 real values, not 3
    torch.testing.assert_close(emb[2], torch.zeros(2))  # all padding: zero vector
    with torch.no_grad():
        torch.testing.assert_close(net(padded)[0], net(short)[0])


# ----------------------------------------------------------------------------- initialisation


def init_net(activation: str, init: str = "auto") -> WideDeep:
    """A wide MLP so that sample variances are accurate: input 512, hidden [256, 512].

    Both layers are non-square (512→256, 256→512) so that Glorot, LeCun and He differ."""
    layout = {
        "wide_size": WIDE_SIZE,
        "user": {
            "categorical": [{"name": "u", "num_embeddings": 2000, "dim": 64}],
            "bags": [],
            "num_dense": 192,
        },
        "item": {"categorical": [], "bags": [], "num_dense": 256},
    }
    torch.manual_seed(0)
    return WideDeep(WideDeepConfig.from_layout(layout, hidden=[256, 512], activation=activation, init=init))


def expected_variance(activation: str, fan_in: int, fan_out: int, slope: float) -> float:
    if activation in ("relu", "elu"):
        return 2.0 / fan_in  # He
    if activation == "leaky_relu":
        return 2.0 / ((1 + slope**2) * fan_in)
    if activation == "selu":
        return 1.0 / fan_in  # LeCun
    return 2.0 / (fan_in + fan_out)  # Glorot (tanh, sigmoid)


@pytest.mark.parametrize("activation", ["relu", "elu", "leaky_relu", "tanh", "sigmoid", "selu"])
def test_initialisation_follows_the_activation(activation):
    net = init_net(activation)
    layers = blocks(net)
    assert [tuple(b.linear.weight.shape) for b in layers] == [(256, 512), (512, 256)]
    for b in layers:
        weight = b.linear.weight.detach()
        fan_out, fan_in = weight.shape
        slope = getattr(b.act, "negative_slope", 0.0)
        want = expected_variance(activation, fan_in, fan_out, slope)
        assert weight.var().item() == pytest.approx(want, rel=0.1), (activation, fan_in, fan_out)
        assert abs(weight.mean().item()) < 0.1 * want**0.5
        assert weight.abs().sum() > 0
        assert (b.linear.bias == 0).all()
        # SELU keeps its self-normalisation only with AlphaDropout
        assert type(b.drop) is (nn.AlphaDropout if activation == "selu" else nn.Dropout)
    assert (net.over.head.bias == 0).all()
    assert net.over.head.weight.abs().sum() > 0
    assert (net.wide.weight == 0).all()
    assert (net.wide.bias == 0).all()
    # embeddings: N(0, 1/dim), so each vector has norm about 1
    emb = net.deep.user.embeddings[0].weight.detach()
    assert emb.var().item() == pytest.approx(1 / 64, rel=0.1)


def test_selu_uses_alpha_dropout_only_there():
    assert not any(isinstance(m, nn.AlphaDropout) for m in WideDeep(make_config(activation="relu")).modules())
    selu = WideDeep(make_config(activation="selu"))
    assert any(isinstance(m, nn.AlphaDropout) for m in selu.modules())
    assert not any(type(m) is nn.Dropout for m in selu.modules())


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_standard_normal_init_has_unit_variance(activation):
    net = init_net(activation, init="standard_normal")
    for b in blocks(net):
        assert b.linear.weight.var().item() == pytest.approx(1.0, rel=0.1)
        assert (b.linear.bias == 0).all()


# ----------------------------------------------------------------------------- BatchNorm placement


def trace_blocks(net: WideDeep, batch: dict) -> tuple[list[str], list[Tensor], list[Tensor], list[Tensor]]:
    """Run ``batch`` and record the order of norm/act calls and the norm, act and block outputs."""
    order, norm_out, act_out, block_out = [], [], [], []

    def record(name: str, into: list[Tensor]):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:  # returns None: output unchanged
            order.append(name)
            into.append(out)

        return hook

    for b in blocks(net):
        b.norm.register_forward_hook(record("norm", norm_out))
        b.act.register_forward_hook(record("act", act_out))
        b.drop.register_forward_hook(record("drop", block_out))  # the block's last step
    net(batch)
    return order, norm_out, act_out, block_out


def test_batchnorm_before_the_activation():
    net = WideDeep(make_config(batchnorm="before", activation="relu", dropout=0.0))
    order, norm_out, _, block_out = trace_blocks(net, make_batch(32))
    assert order == ["norm", "act", "drop"] * 2
    assert min(o.min().item() for o in norm_out) < 0  # BatchNorm output is centred
    assert all((o >= 0).all() for o in block_out)  # relu comes last


def test_batchnorm_after_the_activation():
    net = WideDeep(make_config(batchnorm="after", activation="relu", dropout=0.0))
    order, norm_out, act_out, block_out = trace_blocks(net, make_batch(32))
    assert order == ["act", "norm", "drop"] * 2
    assert all((o >= 0).all() for o in act_out)  # the norm's input
    assert all(o.min() < 0 for o in block_out)  # the norm (training mode) centres the block output
    assert all(torch.equal(n, b) for n, b in zip(norm_out, block_out, strict=True))


def test_batchnorm_none_has_no_norm():
    net = WideDeep(make_config(batchnorm="none"))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    assert sum(isinstance(m, nn.BatchNorm1d) for m in WideDeep(make_config()).modules()) == 2
    assert net(make_batch(4)).shape == (4,)


# ----------------------------------------------------------------------------- regression head


@pytest.mark.parametrize("output_activation", ["relu", "none"])
def test_regression_output_activation(output_activation):
    net = WideDeep(make_config(task="regression", output_activation=output_activation)).eval()
    batch = make_batch(64, seed=8)
    with torch.no_grad():
        net.over.head.bias.fill_(-100.0)  # every raw output is now negative
    out = net.predict(batch)  # regression: no sigmoid
    if output_activation == "relu":
        assert (out == 0).all()
        with torch.no_grad():
            net.over.head.bias.fill_(0.0)
        free = net.predict(batch)
        assert (free >= 0).all() and (free > 0).any()
    else:
        assert (out < 0).all()


def test_regression_output_starts_at_the_given_bias():
    net = WideDeep(make_config(task="regression", output_bias=3.53)).eval()
    assert float(net.over.head.bias) == pytest.approx(3.53)
    assert float(net.predict(make_batch(256, seed=9)).mean()) == pytest.approx(3.53, abs=0.5)  # not 0, 3.5 stars off


# ----------------------------------------------------------------------------- parameter groups


@pytest.mark.parametrize("config", [{}, {"use_wide": False}, {"use_deep": False}])
def test_wide_and_deep_parameters_partition_all_parameters(config):
    net = WideDeep(make_config(**config))
    wide, deep = net.wide_parameters(), net.deep_parameters()
    everything = {id(p) for p in net.parameters()}
    assert {id(p) for p in wide}.isdisjoint(id(p) for p in deep)
    assert {id(p) for p in wide} | {id(p) for p in deep} == everything
    assert len(wide) + len(deep) == len(everything)  # and no duplicates inside a group
    assert bool(wide) == (net.wide is not None)
    assert bool(deep) == (net.deep is not None)
    if net.deep is not None:
        assert any(p is net.over.head.weight for p in deep)


def test_wide_backward_touches_only_wide_parameters():
    net = WideDeep(make_config(use_deep=False))
    batch = make_batch(8, seed=9)
    net(batch).sum().backward()
    grad = net.wide.weight.grad
    assert grad is not None and net.wide.bias.grad is not None
    assert grad[0].abs().sum() == 0  # padding row gets no gradient
    used = torch.cat([batch[k].flatten() for k in ("wide.user", "wide.item", "wide.cross")]).unique()
    used = used[used != 0]
    assert (grad[used] != 0).all()

    full = WideDeep(make_config())
    full.wide(batch).sum().backward()  # the wide arch alone, with the deep part present
    assert all(p.grad is not None for p in full.wide_parameters())
    assert all(p.grad is None for p in full.deep_parameters())


# ----------------------------------------------------------------------------- config


def no_deep_inputs() -> dict:
    layout = copy.deepcopy(LAYOUT)
    for side in ("user", "item"):
        layout[side]["num_dense"] = 0
        for e in layout[side]["categorical"] + layout[side]["bags"]:
            e["dim"] = 0
    return layout


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"activation": "gelu"}, "gelu"),
        ({"dropout": 1.0}, "1.0"),
        ({"dropout": -0.1}, "-0.1"),
        ({"hidden": []}, r"\[\]"),
        ({"hidden": [8, 0]}, r"\[8, 0\]"),
        ({"use_wide": False, "use_deep": False}, "use_wide"),
        ({"batchnorm": "Before"}, "Before"),
        ({"task": "multiclass"}, "multiclass"),
        ({"output_activation": "softplus"}, "softplus"),
        ({"init": "xavier"}, "xavier"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_config(**kwargs)


def test_config_rejects_a_deep_part_without_inputs():
    with pytest.raises(ValueError, match="no inputs"):
        make_config(no_deep_inputs())
    make_config(no_deep_inputs(), use_deep=False)  # fine for a wide-only model


def test_config_rejects_empty_wide_table():
    with pytest.raises(ValueError, match="wide_size"):
        make_config({**LAYOUT, "wide_size": 0})


def test_from_layout_round_trip():
    layout = copy.deepcopy(LAYOUT)
    config = WideDeepConfig.from_layout(layout, hidden=[8], activation="tanh", dropout=0.0)
    assert layout == LAYOUT  # not mutated
    saved = asdict(config)
    assert saved["wide_size"] == WIDE_SIZE
    assert saved["user"] == LAYOUT["user"] and saved["item"] == LAYOUT["item"]
    assert (saved["hidden"], saved["activation"], saved["dropout"]) == ([8], "tanh", 0.0)
    assert config.user.width == 4 + 2 + 3 + 1 and config.item.width == 4 + 2 + 2

    # the checkpoint path: JSON → WideDeepConfig(**...) → the same network
    restored = WideDeepConfig(**json.loads(json.dumps(saved)))
    assert restored == config
    net = WideDeep(config).eval()
    twin = WideDeep(restored).eval()
    twin.load_state_dict(net.state_dict())
    batch = make_batch(4)
    with torch.no_grad():
        torch.testing.assert_close(twin(batch), net(batch))


# ----------------------------------------------------------------------------- export, determinism


def test_torch_export_matches_eager():
    # torch.export takes the dict batch as it is (a pytree input); no jit.trace fallback needed.
    net = WideDeep(make_config())
    net(make_batch(32, seed=10))  # non-default running stats
    net.eval()
    batch = make_batch(8, seed=11)
    exported = torch.export.export(net, (batch,)).module()
    with torch.no_grad():
        for b in (batch, make_batch(8, seed=12)):  # same shapes, other values
            torch.testing.assert_close(exported(b), net(b), atol=1e-6, rtol=0)


def test_torch_export_serving_shape_with_dynamic_catalogue():
    # The serving shape: one user row, any number of items. Whether Bu == B or Bu == 1 is
    # fixed at export time (the broadcast is traced), so serving exports this shape itself.
    net = WideDeep(make_config()).eval()
    one = make_batch(8, user_rows=1, seed=14)
    items = torch.export.Dim("items", min=2)
    dynamic = {k: None if k.startswith(("user.", "wide.user")) else {0: items} for k in one}
    exported = torch.export.export(net, (one,), dynamic_shapes=(dynamic,)).module()
    with torch.no_grad():
        for rows in (3, 50):
            b = make_batch(rows, user_rows=1, seed=rows)
            out = exported(b)
            assert out.shape == (rows,)
            torch.testing.assert_close(out, net(b), atol=1e-6, rtol=0)


def test_seeded_construction_is_deterministic():
    torch.manual_seed(0)
    a = WideDeep(make_config()).state_dict()
    torch.manual_seed(0)
    b = WideDeep(make_config()).state_dict()
    torch.manual_seed(1)
    c = WideDeep(make_config()).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
