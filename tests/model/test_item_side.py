"""The full ranking at evaluation (wdrec.model.item_side) against forward over every (user, item) pair.

Evaluation used to assemble every pair of a block of users × the catalogue, each with the
user's history window at the evaluation point, and run ``forward`` over all of them. It now
computes the items' half of the network once per evaluation epoch and pairs it with each
block's users. Over random networks and feature layouts (tests/helpers/random_models.py:
every feature kind, crosses of every side pairing, histories crossed with the candidate), the
ranking batches of :mod:`wdrec.data.batches` from a real :class:`Timeline` must give the old
path's scores within 1e-5 wherever the metric reads them, and the same HR, NDCG and recall.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers.random_models import EVERYTHING, ITEMS, N_ITEMS, N_USERS, TRAIN, USERS, Case, cases, network
from hypothesis import HealthCheck, given, settings

from wdrec.data.batches import RankingBatches, ranking_features
from wdrec.data.features import FeatureSpec, SideTensors
from wdrec.data.schema import ITEM_ID, USER_ID
from wdrec.data.timeline import Timeline
from wdrec.model.item_side import ItemSide
from wdrec.model.widedeep import WideDeep
from wdrec.training.metrics import TopKRanking

TOLERANCE = 1e-5


class Evaluation:
    """A data set's ranking batches, as the data module makes them: users in blocks, each with its
    history window somewhere in its timeline, relevant items, and excluded ones (part of each
    user's history left rankable, so forward must score those rows)."""

    def __init__(self, case: Case) -> None:
        self.spec = FeatureSpec.fit(case.fields, case.crosses, TRAIN, USERS, ITEMS)
        self.users, self.items = self.spec.encode("user", USERS), self.spec.encode("item", ITEMS)
        self.timeline = Timeline({"train": [TRAIN]}, pd.Index(USERS[USER_ID]), self.spec)
        g = torch.Generator().manual_seed(case.seed)
        users = torch.arange(N_USERS)
        start, end = (torch.from_numpy(b) for b in self.timeline.bounds("train", users.numpy()))
        position = start + (torch.rand(N_USERS, generator=g) * (end - start + 1)).long()  # anywhere in the timeline
        trained = pd.DataFrame({"user": pd.Index(USERS[USER_ID]).get_indexer(TRAIN[USER_ID]),
                                "item": pd.Index(ITEMS[ITEM_ID]).get_indexer(TRAIN[ITEM_ID])})  # fmt: skip
        kept = torch.rand(len(trained), generator=g) < 0.6
        exclude = {k: torch.tensor(trained[k].to_numpy())[kept] for k in ("user", "item")}
        relevant = {"user": users.repeat(2), "item": torch.randint(0, N_ITEMS, (2 * N_USERS,), generator=g)}
        self.batches = list(RankingBatches(users, {"start": start, "position": position}, relevant, exclude, 4))

    def features(self) -> list[dict[str, torch.Tensor]]:
        return [ranking_features(self.spec, batch, self.users, self.timeline, N_ITEMS) for batch in self.batches]

    def every_pair(self, net: WideDeep) -> list[torch.Tensor]:
        """The old path: ``forward`` over each block's users × every item, history windows repeated per pair."""
        out = []
        for batch in self.batches:
            block, n = batch["ranking_user"], N_ITEMS
            history = self.timeline.window(batch["ranking_start"].repeat_interleave(n),
                                           batch["ranking_position"].repeat_interleave(n), self.spec.history_length)  # fmt: skip
            pairs = self.spec.assemble(self.users.take(block.repeat_interleave(n)), self.items.take(torch.arange(n).repeat(len(block))), history)
            out.append(net(pairs).view(len(block), n))
        return out

    def ranked(self, item_side: ItemSide) -> list[torch.Tensor]:
        """The new path, as ``WideDeepModule._rank`` scores a batch."""
        return [item_side.logits(SideTensors.from_batch(f, "user"), skip=f["exclude"]) for f in self.features()]


def assert_same_where_ranked(evaluation: Evaluation, got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    for features, new, old in zip(evaluation.features(), got, expected, strict=True):
        rankable = ~features["exclude"]
        torch.testing.assert_close(new[rankable], old[rankable], atol=TOLERANCE, rtol=0)


def metrics(evaluation: Evaluation, scores: list[torch.Tensor]) -> dict[str, float]:
    metric = TopKRanking(k=3)
    for features, block in zip(evaluation.features(), scores, strict=True):
        metric.update(block, features["relevant"], features["exclude"])
    return {name: value.item() for name, value in metric.compute().items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_ranking_scores_equal_forward_over_every_pair(case: Case) -> None:
    evaluation = Evaluation(case)
    net = network(evaluation.spec, case)
    with torch.inference_mode():
        expected = evaluation.every_pair(net)
    assert_same_where_ranked(evaluation, evaluation.ranked(ItemSide(evaluation.spec, net, evaluation.items, case.limits)), expected)


def test_same_metrics_as_forward_over_every_pair() -> None:
    """A binary network over every feature kind: HR, NDCG and recall as the old path gave them."""
    for seed in range(4):
        case = Case(EVERYTHING.fields, EVERYTHING.crosses, EVERYTHING.config, EVERYTHING.limits, seed)
        evaluation = Evaluation(case)
        net = network(evaluation.spec, case)
        with torch.inference_mode():
            expected = evaluation.every_pair(net)
        got = evaluation.ranked(ItemSide(evaluation.spec, net, evaluation.items))
        assert_same_where_ranked(evaluation, got, expected)
        assert metrics(evaluation, got) == metrics(evaluation, expected)


def test_an_item_side_kept_across_a_weight_change_is_caught() -> None:
    """The planted break: the items' half computed before a training step, used after it."""
    evaluation = Evaluation(EVERYTHING)
    net = network(evaluation.spec, EVERYTHING)
    stale = ItemSide(evaluation.spec, net, evaluation.items)
    with torch.no_grad():  # one "training step" on the item side's parameters
        net.wide.weight.add_(torch.randn(net.wide.weight.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
        net.deep.item.embeddings[0].weight.mul_(1.5)
    with torch.inference_mode():
        expected = evaluation.every_pair(net)
    with pytest.raises(AssertionError):
        assert_same_where_ranked(evaluation, evaluation.ranked(stale), expected)
    assert_same_where_ranked(evaluation, evaluation.ranked(ItemSide(evaluation.spec, net, evaluation.items)), expected)


def test_the_network_must_be_in_eval_mode() -> None:
    evaluation = Evaluation(EVERYTHING)
    net = network(evaluation.spec, EVERYTHING).train()
    with pytest.raises(ValueError, match="eval mode"):
        ItemSide(evaluation.spec, net, evaluation.items)


def test_evaluating_leaves_the_training_random_stream_alone() -> None:
    """Training's dropout draws from torch's global generator: an evaluation epoch between two
    training epochs must not move it (fusing the network once built layers with random weights)."""
    evaluation = Evaluation(EVERYTHING)
    net = network(evaluation.spec, EVERYTHING)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    evaluation.ranked(ItemSide(evaluation.spec, net, evaluation.items))
    assert torch.equal(torch.get_rng_state(), before)
