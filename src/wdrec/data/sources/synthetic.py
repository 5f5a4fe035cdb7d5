"""Synthetic interactions with planted structure, for scale work and sanity checks.

Real logs here are small (MovieLens-100k); the generator gives any size on demand, seeded
and bitwise reproducible, so the data pipeline, training throughput and serving can be
measured at 10M+ rows without a download. It is built so that a model has something to
learn, and so that side features matter, not only ids:

- users and items get latent vectors (``user·item`` has unit variance); items get a
  Zipf-like popularity (``rank ** -popularity_exponent``, ranks shuffled);
- every side feature is a noisy function of the same latent vectors (age, gender,
  occupation and region of users; category, tags and release year of items);
- each user takes their items by successive sampling without replacement, with weight
  popularity × exp(CATEGORY_SCALE · user·(mean vector of the item's category)) ×
  sigmoid(AFFINITY_SCALE · user·item): users favour some categories, and within them the
  items they like, so occupation predicts category and category predicts the next item;
- ratings are 2.6 + 1.2 · user·item plus user and item biases plus noise, rounded to 1..5
  (about MovieLens's mix);
- interactions per user follow a heavy tail (3 + a log-normal share, at most half the
  catalogue); timestamps increase along each user's sequence, in random item order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from wdrec.data.schema import ITEM_ID, RATING, STRING_LIST, TIMESTAMP, USER_ID, InteractionData
from wdrec.data.sources.base import InteractionSource

OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "programmer", "retired",
    "salesman", "scientist", "student", "technician", "writer",
)  # fmt: skip
REGIONS = ("northeast", "southeast", "midwest", "southwest", "mountain", "pacific", "alaska", "hawaii")
CATEGORIES = tuple(f"category-{k:02d}" for k in range(30))
TAGS = tuple(f"tag-{k:02d}" for k in range(50))

MIN_PER_USER = 3  # the leave-one-out split needs a train, a validation and a test item
# How strongly taste competes with popularity (see _Choice): for whole categories, and for
# single items within them.
CATEGORY_SCALE = 2.5
AFFINITY_SCALE = 3.0
MAX_EXPONENT = 2.0  # beyond it the head swamps everything, and generation slows (see Synthetic)
COUNT_SIGMA = 1.0  # log-normal spread of the per-user share of interactions
BLOCK = 1 << 22  # candidate draws (or dense score cells) handled at once; bounds memory
DENSE_COST = 8  # about how many candidate draws cost as much as scoring one item densely
EPOCH = 1_420_070_400  # 2015-01-01T00:00:00Z, start of the simulated log
YEAR = 365 * 86_400


class Synthetic(InteractionSource):
    """A seeded interaction log with user and item features (see the module docstring).

    Args:
        n_users, n_items: table sizes; every user appears in the log, items may not.
        n_interactions: exact number of (user, item) pairs, each pair at most once; between
            ``3 * n_users`` and ``n_users * (n_items // 2)``.
        seed: the same arguments and seed give bitwise identical tables.
        latent_dim: size of the latent vectors behind interactions and features.
        popularity_exponent: Zipf exponent of item popularity, 0 (uniform) to 2. A steep head
            is slow to sample without replacement: 10M interactions (200k users, 50k items)
            take about 15 s of one core at 1.0, 55 s at 1.5 and 230 s at 2.0.
        with_ratings: add a ``rating`` column (1..5, float).
    """

    def __init__(
        self,
        n_users: int = 10_000,
        n_items: int = 2_000,
        n_interactions: int = 500_000,
        seed: int = 0,
        latent_dim: int = 8,
        popularity_exponent: float = 1.0,
        with_ratings: bool = True,
    ) -> None:
        n_users = _check_int("n_users", n_users, 1)
        n_items = _check_int("n_items", n_items, 2 * MIN_PER_USER)
        n_interactions = _check_int("n_interactions", n_interactions, 1)
        seed = _check_int("seed", seed, 0)
        latent_dim = _check_int("latent_dim", latent_dim, 1)
        if n_interactions < MIN_PER_USER * n_users:
            raise ValueError(
                f"n_interactions={n_interactions} must be at least {MIN_PER_USER} * n_users = "
                f"{MIN_PER_USER * n_users}: every user needs {MIN_PER_USER} interactions"
            )
        if n_interactions > n_users * (n_items // 2):
            raise ValueError(
                f"n_interactions={n_interactions} must not exceed n_users * (n_items // 2) = "
                f"{n_users * (n_items // 2)}: a user interacts with at most half the items"
            )
        if (
            isinstance(popularity_exponent, bool)
            or not isinstance(popularity_exponent, int | float)
            or not 0 <= popularity_exponent <= MAX_EXPONENT
        ):
            raise ValueError(
                f"popularity_exponent must be a number from 0 to {MAX_EXPONENT}, got {popularity_exponent!r}"
            )
        if not isinstance(with_ratings, bool):
            raise ValueError(f"with_ratings must be True or False, got {with_ratings!r}")
        self.n_users, self.n_items, self.n_interactions = n_users, n_items, n_interactions
        self.seed, self.latent_dim = seed, latent_dim
        self.popularity_exponent, self.with_ratings = float(popularity_exponent), with_ratings

    def __repr__(self) -> str:
        return (
            f"synthetic(n_users={self.n_users}, n_items={self.n_items}, n_interactions={self.n_interactions}, "
            f"seed={self.seed}, latent_dim={self.latent_dim}, popularity_exponent={self.popularity_exponent}, "
            f"with_ratings={self.with_ratings})"
        )

    def load(self, data_dir: Path) -> InteractionData:
        """Generate the tables; ``data_dir`` is unused (generation is the cache)."""
        rng = np.random.default_rng(self.seed)
        d = self.latent_dim
        # Unit-variance affinity: each coordinate has variance 1/sqrt(d).
        user_vecs = rng.standard_normal((self.n_users, d)) / d**0.25
        item_vecs = rng.standard_normal((self.n_items, d)) / d**0.25
        user_ids, item_ids = _decimal_ids(self.n_users), _decimal_ids(self.n_items)
        users = _users_table(rng, user_vecs, user_ids)
        items, category = _items_table(rng, item_vecs, item_ids)

        ranks = rng.permutation(self.n_items) + 1.0
        popularity = ranks**-self.popularity_exponent
        counts = (
            _allocate(
                self.n_interactions - MIN_PER_USER * self.n_users,
                rng.lognormal(0.0, COUNT_SIGMA, self.n_users),
                self.n_items // 2 - MIN_PER_USER,
            )
            + MIN_PER_USER
        )
        user, item = _sample_items(rng, _Choice(user_vecs, item_vecs, popularity, category), counts)
        timestamp = _timestamps(rng, counts)

        log = pd.DataFrame(
            {
                USER_ID: pd.Series(user_ids.take(user), dtype="str"),
                ITEM_ID: pd.Series(item_ids.take(item), dtype="str"),
                TIMESTAMP: timestamp,
            }
        )
        if self.with_ratings:
            log[RATING] = _ratings(rng, user_vecs, item_vecs, user, item)
        origin = repr(self)
        return InteractionData(
            log, users, items, origins=dict.fromkeys(("interactions", "users", "items"), origin)
        )


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _decimal_ids(n: int) -> pa.Array:
    return pa.array(np.arange(n, dtype=np.int64)).cast(pa.string())


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)


def _pick(rng: np.random.Generator, vecs: np.ndarray, n_values: int, noise: float) -> np.ndarray:
    """Per row, the index of the random prototype nearest the row's latent vector, with noise."""
    scores = _standardise(vecs @ rng.standard_normal((vecs.shape[1], n_values)))
    return np.argmax(scores + noise * rng.gumbel(size=scores.shape), axis=1)


def _projection(rng: np.random.Generator, vecs: np.ndarray, noise: float) -> np.ndarray:
    """A standardised random direction of the latent space, blurred by ``noise``."""
    signal = _standardise(vecs @ rng.standard_normal((vecs.shape[1], 1)))[:, 0]
    return (signal + noise * rng.standard_normal(len(vecs))) / math.sqrt(1 + noise**2)


def _strings(names: tuple[str, ...], index: np.ndarray) -> pd.Series:
    return pd.Series(pa.array(names).take(index), dtype="str")


def _users_table(rng: np.random.Generator, vecs: np.ndarray, ids: pa.Array) -> pd.DataFrame:
    age = np.clip(np.rint(36 + 12 * _projection(rng, vecs, 0.5)), 16, 80).astype(np.int64)
    female = _projection(rng, vecs, 0.7) > 0
    return pd.DataFrame(
        {
            USER_ID: pd.Series(ids, dtype="str"),
            "age": age,
            "gender": _strings(("M", "F"), female.astype(np.int64)),
            "occupation": _strings(OCCUPATIONS, _pick(rng, vecs, len(OCCUPATIONS), 0.5)),
            "region": _strings(REGIONS, _pick(rng, vecs, len(REGIONS), 1.0)),
        }
    )


def _items_table(
    rng: np.random.Generator, vecs: np.ndarray, ids: pa.Array
) -> tuple[pd.DataFrame, np.ndarray]:
    """The items table, and each item's category index."""
    category = _pick(rng, vecs, len(CATEGORIES), 0.3)
    scores = _standardise(vecs @ rng.standard_normal((vecs.shape[1], len(TAGS))))
    scores += 0.5 * rng.gumbel(size=scores.shape)
    top = np.argsort(-scores, axis=1)[:, :4]  # best-matching tags first
    n_tags = rng.integers(1, 5, len(vecs))
    offsets = np.concatenate([[0], np.cumsum(n_tags)]).astype(np.int32)
    tags = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(TAGS).take(top[np.arange(4) < n_tags[:, None]])
    )
    year = np.clip(np.rint(1998 + 10 * _projection(rng, vecs, 0.7)), 1950, 2024)
    table = pd.DataFrame(
        {
            ITEM_ID: pd.Series(ids, dtype="str"),
            "category": _strings(CATEGORIES, category),
            "tags": pd.Series(pd.arrays.ArrowExtensionArray(tags), dtype=STRING_LIST),
            "release_year": year.astype(np.float64),
            "title": pd.Series(pc.binary_join_element_wise("Item ", ids, ""), dtype="str"),
        }
    )
    return table, category


def _allocate(total: int, weights: np.ndarray, cap: int) -> np.ndarray:
    """Integers proportional to ``weights``, each at most ``cap``, summing to ``total``."""
    counts = np.zeros(len(weights), dtype=np.int64)
    free = np.arange(len(weights))
    while len(free):  # rows whose share reaches the cap get the cap; the rest share what is left
        share = (total - counts.sum()) * weights[free] / weights[free].sum()
        over = share >= cap
        if not over.any():
            whole = np.floor(share).astype(np.int64)
            left = int(total - counts.sum() - whole.sum())  # < number of rows with a fractional part
            whole[np.argsort(-(share - whole), kind="stable")[:left]] += 1
            counts[free] = whole
            break
        counts[free[over]] = cap
        free = free[~over]
    return counts


def _affinity(user_vecs: np.ndarray, item_vecs: np.ndarray, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    out = np.empty(len(user))
    step = BLOCK // 4
    for start in range(0, len(user), step):
        part = slice(start, start + step)
        # np.take gathers rows several times faster than fancy indexing
        out[part] = np.einsum(
            "ij,ij->i", np.take(user_vecs, user[part], axis=0), np.take(item_vecs, item[part], axis=0)
        )
    return out


class _Choice:
    """Item weights for each user: popularity × category taste × sigmoid of item taste.

    ``w[u, j] = p[j] · exp(CATEGORY_SCALE · u·m[c(j)]) · sigmoid(AFFINITY_SCALE · u·v[j])`` with
    ``m[c]`` the mean latent vector of category ``c``'s items. The first two factors are
    drawn exactly in two stages (a category from the user's row, then an item of that
    category by popularity); the sigmoid is an acceptance probability.
    """

    def __init__(
        self, user_vecs: np.ndarray, item_vecs: np.ndarray, popularity: np.ndarray, category: np.ndarray
    ) -> None:
        self.user_vecs, self.item_vecs, self.popularity = user_vecs, item_vecs, popularity
        _, self.category = np.unique(category, return_inverse=True)  # only categories that have items
        size = np.bincount(self.category)
        centroids = np.zeros((len(size), item_vecs.shape[1]))
        np.add.at(centroids, self.category, item_vecs)
        self.centroids = centroids / size[:, None]
        self.category_mass = np.bincount(self.category, weights=popularity)
        # Row u: u + cumulative category probabilities; row c: c + cumulative popularity in c.
        taste = np.log(self.category_mass) + CATEGORY_SCALE * (user_vecs @ self.centroids.T)
        cumulative = np.cumsum(np.exp(taste - taste.max(axis=1, keepdims=True)), axis=1)
        self.user_cdf = (np.arange(len(user_vecs))[:, None] + cumulative / cumulative[:, -1:]).ravel()
        self.by_category = np.argsort(self.category, kind="stable")
        self.category_end = np.cumsum(size)
        self.category_start = self.category_end - size
        within = np.cumsum(popularity[self.by_category])
        within -= np.repeat(within[self.category_end - 1] - self.category_mass, size)
        self.item_cdf = self.category[self.by_category] + within / np.repeat(self.category_mass, size)

    def draw(self, rng: np.random.Generator, user: np.ndarray) -> np.ndarray:
        """One item per entry of ``user`` (int32 indices), by category taste × popularity."""
        n_categories = len(self.category_end)
        slot = np.searchsorted(self.user_cdf, user + rng.random(len(user)), side="right")
        category = np.clip(slot - user.astype(np.int64) * n_categories, 0, n_categories - 1)
        slot = np.searchsorted(self.item_cdf, category + rng.random(len(user)), side="right")
        slot = np.clip(slot, self.category_start[category], self.category_end[category] - 1)
        return self.by_category[slot].astype(np.int32)

    def accept(self, rng: np.random.Generator, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        logit = AFFINITY_SCALE * _affinity(self.user_vecs, self.item_vecs, user, item)
        return rng.random(len(user)) * (1 + np.exp(-logit)) < 1

    def log_weights(self, users: np.ndarray) -> np.ndarray:
        """``log w[u, :]`` for each of ``users``, up to a constant per row."""
        vecs = self.user_vecs[users]
        taste = CATEGORY_SCALE * (vecs @ self.centroids.T)[:, self.category]
        return np.log(self.popularity) + taste - np.logaddexp(0, -AFFINITY_SCALE * (vecs @ self.item_vecs.T))


def _sample_items(
    rng: np.random.Generator, choice: _Choice, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (user, item), grouped by user in random order, ``counts[u]`` distinct items each.

    Successive sampling without replacement with the weights of ``choice``: rounds of draws,
    each accepted with the item-taste sigmoid, keeping first occurrences. A user whose next
    round would cost more than scoring every item (``DENSE_COST`` draws per item) is finished
    by Gumbel top-k over the items they lack, which continues the same sampling exactly.
    """
    n_users, n_items = len(counts), len(choice.item_vecs)
    need = counts.copy()
    rate = np.full(n_users, 0.5)  # estimated share of draws that yield a new accepted item
    kept_u, kept_i = [np.zeros(0, np.int32)], [np.zeros(0, np.int32)]
    kept_keys: list[np.ndarray] = []  # sorted user * n_items + item, one array per round
    while True:
        draws = np.ceil(1.25 * need / rate).astype(np.int64) + 2
        active = np.flatnonzero((need > 0) & (draws * DENSE_COST <= n_items))
        if len(active) == 0:
            break
        found = np.zeros(n_users, dtype=np.int64)
        round_keys = []
        # Blocks hold whole users, in user order, so each block is deduplicated on its own.
        bounds = np.searchsorted(np.cumsum(draws[active]), np.arange(BLOCK, draws[active].sum(), BLOCK))
        for block in np.split(active, bounds):
            u = np.repeat(block.astype(np.int32), draws[block])
            i = choice.draw(rng, u)
            accepted = choice.accept(rng, u, i)
            u, i = u[accepted], i[accepted]
            keys = u.astype(np.int64) * n_items + i
            unique_keys, first = np.unique(keys, return_index=True)
            new = np.zeros(len(keys), dtype=bool)
            new[first] = True
            for seen in kept_keys:  # never empty
                pos = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
                new &= seen[pos] != keys
            local = u - block[0]
            found[block] = np.bincount(local[new], minlength=block[-1] - block[0] + 1)[block - block[0]]
            # Rank of each new item among its user's new items, in draw order.
            running = np.concatenate([[0], np.cumsum(new)])
            per_user = np.bincount(local, minlength=block[-1] - block[0] + 1)
            starts = np.cumsum(per_user) - per_user
            keep = new & (running[1:] - running[starts[local]] <= need[u])
            kept_u.append(u[keep])
            kept_i.append(i[keep])
            round_keys.append(unique_keys[keep[first]])
        if sum(len(keys) for keys in round_keys):
            kept_keys.append(np.concatenate(round_keys))
        need -= np.minimum(found, need)
        rate[active] = (found[active] + 0.5) / draws[active]
    user, item = np.concatenate(kept_u), np.concatenate(kept_i)
    rest = np.flatnonzero(need > 0)
    if len(rest):
        extra_u, extra_i = _gumbel_top_k(rng, choice, rest, need[rest], user, item)
        user, item = np.concatenate([user, extra_u]), np.concatenate([item, extra_i])
    order = np.argsort(user + rng.random(len(user)))  # group by user, shuffle within
    return user[order], item[order]


def _gumbel_top_k(
    rng: np.random.Generator,
    choice: _Choice,
    users: np.ndarray,
    need: np.ndarray,
    user: np.ndarray,
    item: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``need[k]`` more items for ``users[k]``, none of those already held in (user, item)."""
    n_users, n_items = len(choice.user_vecs), len(choice.item_vecs)
    row_of = np.full(n_users, -1)
    row_of[users] = np.arange(len(users))
    held = row_of[user] >= 0
    held_rows, held_items = row_of[user[held]], item[held]
    out_u, out_i = [], []
    step = max(1, BLOCK // n_items)
    for start in range(0, len(users), step):
        rows = np.arange(start, min(start + step, len(users)))
        scores = choice.log_weights(users[rows]) + rng.gumbel(size=(len(rows), n_items))
        mine = (held_rows >= start) & (held_rows <= rows[-1])
        scores[held_rows[mine] - start, held_items[mine]] = -np.inf
        most = int(need[rows].max())
        top = np.argpartition(-scores, most - 1, axis=1)[:, :most]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        out_u.append(np.repeat(users[rows], need[rows]).astype(np.int32))
        out_i.append(top[np.arange(most) < need[rows][:, None]].astype(np.int32))
    return np.concatenate(out_u), np.concatenate(out_i)


def _timestamps(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Increasing seconds per user: a start within three years, then exponential gaps."""
    n_users = len(counts)
    start = EPOCH + rng.integers(0, 3 * YEAR, n_users)
    span = rng.uniform(30 * 86_400, 2 * YEAR, n_users)
    owner = np.repeat(np.arange(n_users), counts)
    clock = np.cumsum(rng.exponential(size=int(counts.sum())) * (span / counts)[owner])
    ends = np.cumsum(counts)
    before = np.concatenate([[0.0], clock[ends[:-1] - 1]])
    return start[owner] + np.floor(clock - before[owner]).astype(np.int64)


def _ratings(
    rng: np.random.Generator, user_vecs: np.ndarray, item_vecs: np.ndarray, user: np.ndarray, item: np.ndarray
) -> np.ndarray:
    """Affinity plus user and item biases plus noise, rounded and clipped to 1..5."""
    user_bias = 0.4 * rng.standard_normal(len(user_vecs))
    item_bias = 0.4 * rng.standard_normal(len(item_vecs))
    raw = 2.6 + 1.2 * _affinity(user_vecs, item_vecs, user, item) + user_bias[user] + item_bias[item]
    raw += 0.7 * rng.standard_normal(len(user))
    return np.clip(np.rint(raw), 1, 5)
