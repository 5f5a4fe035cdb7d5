"""Explanations add up: ``sum(terms) + rest == logit`` and ``logit`` is the network's own output.

Random untrained networks over every feature kind and cross pairing (tests/helpers/random_models.py)
and a fixed layout that holds all of them at once, each scored for known users, cold starts with
features and a user with no known feature.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from helpers.random_models import EVERYTHING, ITEMS, N_ITEMS, TRAIN, USERS, Case, cases, network, requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wdrec.data.features import FeatureSpec
from wdrec.export.bundle import Bundle
from wdrec.export.explain import explain
from wdrec.export.scorer import Scorer

TOLERANCE = 1e-5



def _scorer(case: Case) -> Scorer:
    spec = FeatureSpec.fit(case.fields, case.crosses, TRAIN, USERS, ITEMS)
    return Scorer(Bundle(network(spec, case), spec, USERS, ITEMS))


def _check(scorer: Scorer, top: int, split_deep: bool) -> None:
    """Every user of ``requests`` against the whole catalogue: the sums, the logit, the order of the terms."""
    rows = torch.arange(N_ITEMS).flip(0)
    relu_output = scorer.net.over.relu_output
    for user, _ in requests(scorer, 0):
        out = scorer.net(scorer.spec.assemble(user, scorer.items.take(rows)))  # (N,)
        whole = explain(scorer, user, rows, top=10_000, split_deep=split_deep)
        short = explain(scorer, user, rows, top=top, split_deep=split_deep)
        logits = torch.tensor([e.logit for e in whole])
        torch.testing.assert_close(logits.relu() if relu_output else logits, out, atol=TOLERANCE, rtol=0)
        for full, cut in zip(whole, short, strict=True):
            assert abs(full.rest) < TOLERANCE, full  # every contribution is a term: nothing left over
            assert cut.logit == full.logit and len(cut.terms) <= top
            assert abs(math.fsum(t.value for t in cut.terms) + cut.rest - cut.logit) < TOLERANCE
            magnitudes = [abs(t.value) for t in cut.terms]
            assert magnitudes == sorted(magnitudes, reverse=True) and all(m > 0 for m in magnitudes)
            assert all(t.kind in ("wide", "deep") and t.name for t in full.terms)
            assert len({t.name for t in full.terms}) == len(full.terms)  # a repeated id is one term


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), top=st.integers(0, 6), split_deep=st.booleans())
def test_random_networks_terms_add_up_to_the_logit(case: Case, top: int, split_deep: bool) -> None:
    _check(_scorer(case), top, split_deep)


@pytest.mark.parametrize("split_deep", [False, True])
def test_every_feature_kind_and_cross_is_named_and_adds_up(split_deep: bool) -> None:
    scorer = _scorer(EVERYTHING)
    _check(scorer, 4, split_deep)
    known = scorer.users.take(torch.tensor([3]))  # u3: a history of 7 with i4 twice (one term)
    names = {t.name for e in explain(scorer, known, torch.arange(N_ITEMS), top=10_000, split_deep=split_deep) for t in e.terms}
    assert {"wide bias", "item bias", "user bias"} <= names
    for prefix in ("gender=", "age=", "tags=", "history: i", "brand=", "genres="):  # fields, a history by item id
        assert any(n.startswith(prefix) for n in names), (prefix, sorted(names))
    for cross in (r"gender=\w+ × tags=\w+", r"history: i\d+ × this item", r"genres=\w+ × gender=\w+", r"brand=\w+ × genres=\w+"):
        assert any(re.fullmatch(cross, n.split(" / ")[0]) for n in names), (cross, sorted(names))
    deep = {n for n in names if n.startswith("deep")}
    assert deep == ({"deep: baseline (no known feature)", "deep: this user's features", "deep: this item's features"}
                    if split_deep else {"deep"})  # fmt: skip


def test_a_user_with_no_known_feature_has_no_deep_share_and_unknown_values() -> None:
    scorer = _scorer(EVERYTHING)
    blank = scorer.users.take(torch.tensor([scorer.unknown_row]))
    for explanation in explain(scorer, blank, torch.arange(N_ITEMS), top=10_000, split_deep=True):
        names = {t.name for t in explanation.terms}
        shares = [t.value for t in explanation.terms if t.name == "deep: this user's features"]
        assert all(abs(v) < 1e-6 for v in shares), shares  # the baseline is this very user: 0, to rounding
        assert not any(n.startswith(("history:", "tags=")) for n in names), names  # empty bags: no ids
        assert {n for n in names if n.startswith(("gender=", "age=", "user"))} <= {"gender=unknown", "age=unknown",
                                                                                  "user bias (unknown user)"}  # fmt: skip
        assert abs(explanation.rest) < TOLERANCE


def test_top_must_not_be_negative() -> None:
    scorer = _scorer(EVERYTHING)
    with pytest.raises(ValueError, match="top"):
        explain(scorer, scorer.users.take(torch.tensor([0])), torch.arange(3), top=-1)
    assert explain(scorer, scorer.users.take(torch.tensor([0])), torch.zeros(0, dtype=torch.long)) == []
