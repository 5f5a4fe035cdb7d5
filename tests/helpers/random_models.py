"""Random untrained Wide&Deep networks over a small synthetic catalogue, for property tests.

Hypothesis draws a feature layout (categorical, bucketised and standardised numbers, multi-hot
bags and histories on either side, wide or deep or both), crosses of every side pairing
(user × user, user × item, item × user, item × item; exact or hashed into a few buckets, so the
hash wraps) and an untrained network with every activation and BatchNorm placement and
randomised weights and running statistics (:func:`cases`, :func:`network`). :func:`requests`
gives the users to score: known users, a user with no known feature and cold starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from hypothesis import strategies as st

from serving.precomputed import Limits
from wdrec.data.features import Cross, FeatureSpec, Field, SideTensors
from wdrec.data.schema import ITEM_ID, SEEN_COLUMN, USER_ID
from wdrec.export.scorer import Scorer
from wdrec.model.widedeep import ACTIVATIONS, WideDeep, WideDeepConfig

N_USERS, N_ITEMS = 9, 14
TINY = Limits(chunk=4, deep_block=3, cross_sums=0, known_wide=0, known_hidden=0)  # every large-catalogue branch
# (first, second) field pairs a cross may take, named by side; numbers only when bucketised.
PAIRS = {
    "user x user": [("gender", "tags"), ("history", "gender"), ("history", "recent"), ("age", "gender")],
    "user x item": [("gender", "genres"), ("history", "item_id"), ("tags", "genres"), ("user_id", "brand")],
    "item x user": [("genres", "gender"), ("item_id", "history"), ("price", "recent")],
    "item x item": [("brand", "genres"), ("item_id", "brand"), ("genres", "price")],
}


def _tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Users, items and the training interactions; one item never trained on (its id is out of vocabulary)."""
    rng = np.random.default_rng(0)

    def some(values: list[str], most: int) -> list[str]:
        return [str(v) for v in rng.choice(values, rng.integers(0, most + 1))]

    item_ids = [f"i{j}" for j in range(N_ITEMS)]
    items = pd.DataFrame({
        ITEM_ID: item_ids,
        "brand": rng.choice(["a", "b", "c", None], N_ITEMS),
        "genres": [sorted(set(some(["x", "y", "z", "w"], 2))) for _ in range(N_ITEMS)],
        "price": rng.normal(10, 3, N_ITEMS),
    })
    trained = item_ids[:-1]
    histories = [some(trained, 7) for _ in range(N_USERS)]  # repeats allowed
    users = pd.DataFrame({
        USER_ID: [f"u{k}" for k in range(N_USERS)],
        "gender": rng.choice(["F", "M", None], N_USERS),
        "age": rng.integers(15, 70, N_USERS).astype(float),
        "tags": [sorted(set(some(["p", "q", "r"], 2))) for _ in range(N_USERS)],
        "history": histories,
        SEEN_COLUMN: [h + some(item_ids, 2) for h in histories],
    })
    train = pd.DataFrame({USER_ID: np.repeat(users[USER_ID], 2), ITEM_ID: rng.choice(trained, 2 * N_USERS)})
    train = pd.concat([train, pd.DataFrame({USER_ID: "u0", ITEM_ID: trained})])  # every trained item occurs
    return users, items, train


USERS, ITEMS, TRAIN = _tables()


@dataclass
class Case:
    fields: list[Field]
    crosses: list[Cross]
    config: dict
    limits: Limits
    seed: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    flags = st.fixed_dictionaries({"wide": st.booleans(), "deep": st.booleans()})
    age = draw(st.sampled_from(["standardize", "bucketize"]))
    price = draw(st.sampled_from(["standardize", "bucketize"]))
    fields = [
        Field("user_id", "user", embedding_dim=2, **draw(flags)),
        Field("gender", "user", embedding_dim=2, **draw(flags)),
        Field("age", "user", kind="numeric", transform=age, num_buckets=3, embedding_dim=2, **draw(flags)),
        Field("tags", "user", kind="multi_hot", embedding_dim=2, **draw(flags)),  # a user bag, deep or not
        Field("history", "user", kind="history", max_length=draw(st.integers(1, 6)), embedding_dim=3, **draw(flags)),
        Field("recent", "user", kind="history", max_length=2, embedding_dim=2, **draw(flags)),
        Field("item_id", "item", embedding_dim=3, wide=draw(st.booleans())),  # deep: the network needs an input
        Field("brand", "item", embedding_dim=2, **draw(flags)),
        Field("genres", "item", kind="multi_hot", embedding_dim=2, **draw(flags)),
        Field("price", "item", kind="numeric", transform=price, num_buckets=3, embedding_dim=2, **draw(flags)),
    ]
    dense = {f.name for f in fields if f.is_dense}
    pairs = [pair for side in PAIRS.values() for pair in side if not dense & set(pair)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=5))
    crosses = [Cross(list(pair), num_buckets=draw(st.sampled_from([2, 5, 100_003]))) for pair in chosen]
    use_wide, use_deep = draw(st.sampled_from([(True, True), (True, False), (False, True)]))
    config = {
        "hidden": draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)),
        "activation": draw(st.sampled_from(sorted(ACTIVATIONS))),
        "batchnorm": draw(st.sampled_from(["before", "after", "none"])),
        "dropout": draw(st.sampled_from([0.0, 0.3])),
        "task": draw(st.sampled_from(["binary", "regression"])),
        "output_activation": draw(st.sampled_from(["none", "relu"])),
        "use_wide": use_wide,
        "use_deep": use_deep,
    }
    return Case(fields, crosses, config, draw(st.sampled_from([Limits(), TINY])), draw(st.integers(0, 2**16)))


def network(spec: FeatureSpec, case: Case) -> WideDeep:
    """An untrained network with every parameter and running statistic randomised, in eval mode."""
    with torch.random.fork_rng(devices=[]):  # the initial weights too come from the case's seed, whatever ran before
        torch.manual_seed(case.seed)
        net = WideDeep(WideDeepConfig.from_layout(spec.layout(), **case.config))
    g = torch.Generator().manual_seed(case.seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("wide.", "over.")) or name.endswith((".bias", "norm.weight")):
                param.copy_(torch.randn(param.shape, generator=g) * 0.5 + (1.0 if name.endswith("norm.weight") else 0.0))
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=g) * 2 + 0.2)
    return net.eval()


def requests(scorer: Scorer, seed: int) -> list[tuple[SideTensors, int | None]]:
    """Known users with their rows, one of them without, a user with no known feature, and cold starts."""
    known = [(scorer.users.take(torch.tensor([row])), row) for row in (0, 3, N_USERS - 1)]
    rng = np.random.default_rng(seed)
    cold = [
        {"gender": "F", "age": 33, "tags": ["p", "zzz"], "history": ["i3", "i3", "i5", "nope"], "recent": ["i5"]},
        {"history": [str(i) for i in rng.choice(ITEMS[ITEM_ID], 4)], "age": float(rng.integers(10, 80))},
    ]
    blank = scorer.users.take(torch.tensor([scorer.unknown_row]))
    return [*known, (known[1][0], None), (blank, None), *((scorer.encode_user_features(c), None) for c in cold)]


# One layout with every feature kind and every cross pairing at once, for tests that look at each.
EVERYTHING = Case(
    fields=[
        Field("user_id", "user", embedding_dim=2),
        Field("gender", "user", embedding_dim=2),
        Field("age", "user", kind="numeric", transform="bucketize", num_buckets=3, embedding_dim=2),
        Field("tags", "user", kind="multi_hot", embedding_dim=2),
        Field("history", "user", kind="history", max_length=6, embedding_dim=3),
        Field("item_id", "item", embedding_dim=3),
        Field("brand", "item", embedding_dim=2),
        Field("genres", "item", kind="multi_hot", embedding_dim=2),
        Field("price", "item", kind="numeric", embedding_dim=2),  # standardised: deep only
    ],
    crosses=[
        Cross(["gender", "tags"]),  # user × user
        Cross(["history", "item_id"]),  # user × item
        Cross(["genres", "gender"], num_buckets=5),  # item × user, hashed
        Cross(["brand", "genres"]),  # item × item
    ],
    config={"hidden": [5, 3], "activation": "relu", "batchnorm": "before", "dropout": 0.0, "task": "binary"},
    limits=Limits(),
    seed=4,  # its seed 3 leaves every unit of the last hidden layer dead: a deep part with nothing to explain
)
