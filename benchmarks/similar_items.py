"""Similar items on a trained model: which way of finding an item's neighbours measures best.

Three methods, each giving every catalogue item its top 10 neighbours (itself left out):

- ``deep_item_share``: cosine of the items' share of the first deep layer
  (``DeepArch.item_share``: item id, genres and year embeddings through the first layer);
- ``model_scores``: the model's own scores for a cold-start user whose histories hold just
  the query item (every history field), the whole catalogue scored per query;
- ``cooccurrence``: item-item cosine over the training interactions (the users' ``history``
  column: who interacted with both, over the square root of each item's popularity).

Figures, averaged over the query items with at least ``--min-interactions`` training
interactions (and over all items), each with the figure random neighbours would get:

- ``genre_share``: share of the 10 neighbours that share a genre with the query item;
- ``cooccur_share``: share of the 10 neighbours that a common user interacted with in training
  (``cooccurrence`` is built from exactly that, so it scores ~1 by construction);
- ``heldout_hit``: share of the users' held-out items (validation and test: ``seen`` minus
  ``history``) found among the 10 neighbours of the user's most recent training item: a
  next-item figure that no method was built from.

    python benchmarks/similar_items.py --json benchmarks/results/similar_items.json --bundle bundles/<run_id>
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

from wdrec.data.schema import SEEN_COLUMN  # noqa: E402
from wdrec.export.bundle import read_bundle  # noqa: E402
from wdrec.export.scorer import Scorer  # noqa: E402
from wdrec.export.similar import CooccurrenceSimilarity, DeepSimilarity, Similarity, neighbours  # noqa: E402

K = 10
HISTORY = "history"  # the bundle's users column of training positives, oldest first


class ModelScoreSimilarity:
    """The catalogue's scores (logits) for a cold-start user whose histories hold only the query item."""

    name = "model_scores"

    def __init__(self, scorer: Scorer) -> None:
        self.scorer, self.columns = scorer, [f.column for f in scorer.spec.history_fields()]
        if not self.columns:
            raise SystemExit("model_scores needs a history feature; this model has none")

    def rows(self, rows: Tensor) -> Tensor:
        ids, scorer = self.scorer.item_ids, self.scorer
        users = [scorer.encode_user_features({column: [ids[q]] for column in self.columns}) for q in rows.tolist()]
        return torch.stack([torch.logit(scorer.score_user(user).double()).float() for user in users])


def figures(neighbours: Tensor, genres: list[set[str]], together: np.ndarray, queries: np.ndarray,
            heldout: list[tuple[int, int]]) -> dict[str, float]:  # fmt: skip
    """The three figures of ``neighbours`` (N, K) over ``queries``, and random neighbours' expectation."""
    n = len(genres)
    shares, cooccur, random_shares, random_cooccur = [], [], [], []
    for q in queries:
        found = neighbours[q].tolist()
        shares.append(np.mean([bool(genres[q] & genres[j]) for j in found]))
        cooccur.append(together[q, found].mean())
        others = [j for j in range(n) if j != q]
        random_shares.append(np.mean([bool(genres[q] & genres[j]) for j in others]))
        random_cooccur.append(together[q, others].mean())
    hits = [target in set(neighbours[last].tolist()) for last, target in heldout]
    return {
        "genre_share": round(float(np.mean(shares)), 4),
        "genre_share_random": round(float(np.mean(random_shares)), 4),
        "cooccur_share": round(float(np.mean(cooccur)), 4),
        "cooccur_share_random": round(float(np.mean(random_cooccur)), 4),
        "heldout_hit": round(float(np.mean(hits)), 4),
        "heldout_hit_random": round(K / (n - 1), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--bundle", required=True, help="bundle directory")
    parser.add_argument("--min-interactions", type=int, default=20, help="query items with at least this many training interactions")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = read_bundle(args.bundle)
    scorer = Scorer(bundle)
    n = len(scorer.item_ids)
    row_of = {item: row for row, item in enumerate(scorer.item_ids)}

    # Training interactions (history) and held-out ones (seen minus history), as catalogue rows.
    histories = [[row_of[i] for i in h if i in row_of] for h in bundle.users[HISTORY]]
    heldout = []
    for history, seen in zip(histories, bundle.users[SEEN_COLUMN], strict=True):
        if history:
            heldout += [(history[-1], row) for row in {row_of[i] for i in seen if i in row_of} - set(history)]
    users = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
    x = np.zeros((n, len(histories)), dtype=np.float32)
    x[items, users] = 1.0
    together = (x @ x.T) > 0  # (N, N): a common user interacted with both
    popularity = x.sum(1)
    genres = [set(g) if g is not None else set() for g in bundle.items["genres"]]

    methods, seconds = {}, {}
    for build in (
        lambda: DeepSimilarity(scorer),
        lambda: CooccurrenceSimilarity(scorer, pairs=(users, items)),  # training interactions only
        lambda: ModelScoreSimilarity(scorer),
    ):
        start = time.perf_counter()
        similarity: Similarity = build()
        methods[similarity.name] = torch.cat([
            neighbours(similarity, torch.arange(s, min(n, s + 256)), K)[0] for s in range(0, n, 256)
        ])  # fmt: skip
        seconds[similarity.name] = round(time.perf_counter() - start, 2)
        print(similarity.name, seconds[similarity.name], "s", flush=True)
    results: dict = {"bundle": args.bundle, "n_items": n, "k": K, "min_interactions": args.min_interactions,
                     "heldout_pairs": len(heldout), "seconds_all_items": seconds}  # fmt: skip
    for label, queries in (
        (f"items_with_{args.min_interactions}_plus", np.flatnonzero(popularity >= args.min_interactions)),
        ("all_items", np.arange(n)),
    ):
        results[label] = {"queries": len(queries)}
        for name, found in methods.items():
            results[label][name] = figures(found, genres, together, queries, heldout)
    write_json(args.json, results, sys.argv)


if __name__ == "__main__":
    main()
