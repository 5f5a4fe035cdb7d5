"""Property: the precomputed scorer equals the network's forward, whatever the network and features.

Hypothesis draws a feature layout over a small synthetic catalogue (categorical, bucketised and
standardised numbers, multi-hot bags and histories on either side, wide or deep or both),
crosses of every side pairing (user × user, user × item, item × user, item × item; exact or
hashed into a few buckets, so the hash wraps), an untrained network with every activation and
BatchNorm placement and randomised weights and running statistics, and the default or the
large-catalogue plan (tiny budgets and steps). Known users, a user with no known feature and
cold starts are then scored against the catalogue and against a few rows (repeated, in any
order), some rows skipped, and every score that is not skipped must equal
``Scorer.score_user`` (forward over ``FeatureSpec.assemble``) within 1e-5.
"""

from __future__ import annotations

import torch
from helpers.random_models import ITEMS, N_ITEMS, TRAIN, USERS, Case, cases, network, requests
from hypothesis import HealthCheck, given, settings

from serving.precomputed import PrecomputedScorer
from wdrec.data.features import FeatureSpec
from wdrec.export.bundle import Bundle
from wdrec.export.scorer import Scorer

TOLERANCE = 1e-5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_precomputed_scores_equal_forward(case: Case) -> None:
    spec = FeatureSpec.fit(case.fields, case.crosses, TRAIN, USERS, ITEMS)
    scorer = Scorer(Bundle(network(spec, case), spec, USERS, ITEMS))
    precomputed = PrecomputedScorer(scorer, case.limits)
    rng = torch.Generator().manual_seed(case.seed)
    rows = torch.randint(0, N_ITEMS, (7,), generator=rng)  # repeats, any order
    skip = torch.rand(N_ITEMS, generator=rng) < 0.3
    for user, user_row in requests(scorer, case.seed):
        exact = scorer.score_user(user)
        torch.testing.assert_close(precomputed.score(user, user_row=user_row), exact, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(precomputed.score(user, rows, user_row), exact[rows], atol=TOLERANCE, rtol=0)
        kept = precomputed.score(user, user_row=user_row, skip=skip)[~skip]
        torch.testing.assert_close(kept, exact[~skip], atol=TOLERANCE, rtol=0)
