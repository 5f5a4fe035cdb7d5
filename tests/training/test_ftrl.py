"""FTRL-Proximal against the published update (McMahan et al., KDD 2013, Algorithm 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wdrec.training.ftrl import FTRL


def ftrl_reference(w, grads, lr, beta, l1, l2):
    """The published per-coordinate update in plain NumPy (float64), one step per gradient."""
    w = np.asarray(w, dtype=np.float64).copy()
    z = np.zeros_like(w)
    n = np.zeros_like(w)
    for g in grads:
        g = np.asarray(g, dtype=np.float64)
        sigma = (np.sqrt(n + g**2) - np.sqrt(n)) / lr
        z = z + g - sigma * w
        n = n + g**2
        w = np.where(np.abs(z) <= l1, 0.0, -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / lr + l2))
    return w, z, n


HP = dict(lr=0.1, beta=1.0, l1=0.5, l2=0.1)
W0 = [0.0, 0.0, 0.0, 0.0, 0.0, 0.2]
GRADS = [
    [2.0, 0.3, -1.0, -0.5, 0.0, 0.7],  # coords 1 and 3 end at 0 (|z| <= l1); 4 sees no gradient
    [-0.4, 0.1, 0.8, 0.5, 0.0, 0.2],
    [1.5, -0.2, -2.0, 0.1, 0.0, -1.1],
]


@pytest.mark.parametrize("steps", [1, 3])
def test_matches_numpy_reference(steps):
    p = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    opt = FTRL([p], **HP)
    for g in GRADS[:steps]:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    w_ref, z_ref, n_ref = ftrl_reference(W0, GRADS[:steps], **HP)
    np.testing.assert_allclose(p.detach().numpy(), w_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(opt.state[p]["z"].numpy(), z_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(opt.state[p]["n"].numpy(), n_ref, rtol=1e-12, atol=1e-14)
    assert opt.state[p]["z"].dtype == torch.float64  # float64 params keep float64 state
    # the L1 threshold puts exact zeros where |z| <= l1, and the test data has some
    zeros = np.abs(z_ref) <= HP["l1"]
    assert zeros.any() and (~zeros).any()
    assert (p.detach().numpy()[zeros] == 0.0).all()


def test_hand_computed_single_step():
    # alpha=0.1, beta=1, l1=0.5, l2=0.1, w0=0, g=[2, 0.3, -1]. With n=0 and w=0:
    #   sigma = |g| / alpha, z = g = [2, 0.3, -1], n = g^2 = [4, 0.09, 1]
    #   w1 = -(2 - 0.5) / ((1 + 2) / 0.1 + 0.1)    = -1.5 / 30.1  = -0.049833887...
    #   w2 = 0                                      (|0.3| <= 0.5)
    #   w3 = -(-1 + 0.5) / ((1 + 1) / 0.1 + 0.1)   =  0.5 / 20.1  =  0.024875621...
    p = nn.Parameter(torch.zeros(3))
    opt = FTRL([p], lr=0.1, beta=1.0, l1=0.5, l2=0.1)
    p.grad = torch.tensor([2.0, 0.3, -1.0])
    opt.step()
    expected = torch.tensor([-1.5 / 30.1, 0.0, 0.5 / 20.1])
    torch.testing.assert_close(p.detach(), expected)
    assert p[1].item() == 0.0
    torch.testing.assert_close(opt.state[p]["z"], torch.tensor([2.0, 0.3, -1.0]))
    torch.testing.assert_close(opt.state[p]["n"], torch.tensor([4.0, 0.09, 1.0]))


def test_initial_value_enters_only_through_first_sigma_w():
    # w0 = 0.3, g = 1, lr=1, beta=1, l1=l2=0: sigma = 1, z = 1 - 0.3 = 0.7, n = 1, w = -0.7 / 2
    p = nn.Parameter(torch.tensor([0.3]))
    opt = FTRL([p], lr=1.0, beta=1.0)
    p.grad = torch.tensor([1.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.35]))


def _bag_loss(bag: nn.EmbeddingBag, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    target = torch.tensor([1.0, 0.0, 1.0])
    return nn.functional.binary_cross_entropy_with_logits(bag(ids, offsets).squeeze(-1), target)


def _sparse_and_dense_runs(init: str, batches, hp):
    sparse_bag = nn.EmbeddingBag(10, 1, mode="sum", sparse=True)
    dense_bag = nn.EmbeddingBag(10, 1, mode="sum", sparse=False)
    with torch.no_grad():
        if init == "zeros":
            sparse_bag.weight.zero_()
        else:
            sparse_bag.weight.normal_(generator=torch.Generator().manual_seed(0))
        dense_bag.weight.copy_(sparse_bag.weight)
    w_start = sparse_bag.weight.detach().clone()
    opt_s = FTRL(sparse_bag.parameters(), **hp)
    opt_d = FTRL(dense_bag.parameters(), **hp)
    for ids, offsets in batches:
        for bag, opt in ((sparse_bag, opt_s), (dense_bag, opt_d)):
            opt.zero_grad()
            _bag_loss(bag, ids, offsets).backward()
            opt.step()
        assert sparse_bag.weight.grad.is_sparse and not dense_bag.weight.grad.is_sparse
    return w_start, opt_s.state[sparse_bag.weight], opt_d.state[dense_bag.weight], sparse_bag, dense_bag


SPARSE_HP = dict(lr=0.2, beta=1.0, l1=0.01, l2=0.05)
# row 2 appears three times in the first batch (duplicates are summed); rows 0, 4, 5, 6, 8 never appear
SPARSE_BATCHES = [
    (torch.tensor([1, 2, 2, 3, 7, 2]), torch.tensor([0, 2, 4])),
    (torch.tensor([2, 9, 3]), torch.tensor([0, 1, 2])),
]
TOUCHED = torch.tensor([1, 2, 3, 7, 9])
UNTOUCHED = torch.tensor([0, 4, 5, 6, 8])


def test_sparse_gradient_updates_only_touched_rows_like_dense():
    w_start, st_s, st_d, sparse_bag, dense_bag = _sparse_and_dense_runs("zeros", SPARSE_BATCHES, SPARSE_HP)
    w_sparse, w_dense = sparse_bag.weight.detach(), dense_bag.weight.detach()
    torch.testing.assert_close(w_sparse[TOUCHED], w_dense[TOUCHED])
    torch.testing.assert_close(st_s["z"][TOUCHED], st_d["z"][TOUCHED])
    torch.testing.assert_close(st_s["n"][TOUCHED], st_d["n"][TOUCHED])
    assert (st_s["n"][TOUCHED] > 0).all() and (w_sparse[TOUCHED] != 0).any()
    assert torch.equal(w_sparse[UNTOUCHED], w_start[UNTOUCHED])
    assert (st_s["z"][UNTOUCHED] == 0).all() and (st_s["n"][UNTOUCHED] == 0).all()


def test_sparse_gradient_leaves_untouched_nonzero_rows_alone():
    # A nonzero start: the touched rows still match the dense update, while the untouched
    # rows keep their start value exactly (a dense step would set them to w(z=0, n=0) = 0).
    w_start, st_s, st_d, sparse_bag, dense_bag = _sparse_and_dense_runs(
        "normal", SPARSE_BATCHES[:1], SPARSE_HP
    )
    rows = torch.tensor([1, 2, 3, 7])  # touched by the one batch
    others = torch.tensor([0, 4, 5, 6, 8, 9])
    torch.testing.assert_close(sparse_bag.weight.detach()[rows], dense_bag.weight.detach()[rows])
    torch.testing.assert_close(st_s["z"][rows], st_d["z"][rows])
    assert torch.equal(sparse_bag.weight.detach()[others], w_start[others])
    assert (w_start[others] != 0).all()
    assert (st_s["z"][others] == 0).all() and (st_s["n"][others] == 0).all()


def test_uncoalesced_sparse_grad_sums_duplicates():
    p = nn.Parameter(torch.zeros(4, 2))
    q = nn.Parameter(torch.zeros(4, 2))
    opt_p, opt_q = FTRL([p], lr=0.1, l1=0.1), FTRL([q], lr=0.1, l1=0.1)
    indices = torch.tensor([[1, 3, 1]])  # row 1 twice, not coalesced
    values = torch.tensor([[1.0, -2.0], [0.5, 0.5], [0.5, 1.0]])
    p.grad = torch.sparse_coo_tensor(indices, values, (4, 2), check_invariants=True)
    q.grad = torch.tensor([[0.0, 0.0], [1.5, -1.0], [0.0, 0.0], [0.5, 0.5]])
    opt_p.step()
    opt_q.step()
    torch.testing.assert_close(p.detach(), q.detach())


def test_l1_gives_exact_zeros_in_logistic_regression():
    gen = torch.Generator().manual_seed(0)
    num_samples, num_features = 2000, 30
    x = torch.randn(num_samples, num_features, generator=gen)
    true_w = torch.zeros(num_features)
    true_w[:3] = torch.tensor([2.0, -3.0, 1.5])  # only three features matter
    y = torch.bernoulli(torch.sigmoid(x @ true_w), generator=gen)

    def train(l1: float) -> torch.Tensor:
        model = nn.Linear(num_features, 1, bias=False)
        nn.init.zeros_(model.weight)
        opt = FTRL(model.parameters(), lr=0.5, beta=1.0, l1=l1, l2=0.0)
        for _ in range(5):
            for batch in torch.arange(num_samples).split(100):
                opt.zero_grad()
                logits = model(x[batch]).squeeze(-1)
                nn.functional.binary_cross_entropy_with_logits(logits, y[batch], reduction="sum").backward()
                opt.step()
        return model.weight.detach().squeeze(0)

    # z is (close to) the summed gradient of the loss summed over batches: for a noise feature
    # at w = 0 that is about epochs * sqrt(num_samples) * 0.5 ~ 100, for a real one thousands
    w_l1, w_plain = train(l1=300.0), train(l1=0.0)
    assert torch.sign(w_l1[:3]).tolist() == [1.0, -1.0, 1.0], w_l1  # the real features survive
    assert (w_l1[3:] == 0).all(), w_l1  # every noise feature is exactly 0
    assert (w_plain != 0).all()  # without L1 nothing is exactly 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params_keep_float32_state(dtype):
    p = nn.Parameter(torch.zeros(3, dtype=dtype))
    opt = FTRL([p], lr=0.1, beta=1.0, l1=0.5, l2=0.1)
    p.grad = torch.tensor([2.0, 0.3, -1.0], dtype=dtype)
    opt.step()
    assert p.dtype == dtype
    assert opt.state[p]["z"].dtype == torch.float32 and opt.state[p]["n"].dtype == torch.float32
    torch.testing.assert_close(
        p.detach().float(), torch.tensor([-1.5 / 30.1, 0.0, 0.5 / 20.1]), rtol=1e-2, atol=1e-3
    )


def test_low_precision_sparse_grad():
    bag = nn.EmbeddingBag(10, 1, mode="sum", sparse=True).to(torch.bfloat16)
    nn.init.zeros_(bag.weight)
    opt = FTRL(bag.parameters(), lr=0.1)
    bag(torch.tensor([[1, 2]])).sum().backward()
    opt.step()
    assert bag.weight.dtype == torch.bfloat16
    assert (bag.weight[[1, 2]] != 0).all() and (bag.weight[[0, 3]] == 0).all()


def test_closure_returns_loss_and_state_dict_round_trips():
    p = nn.Parameter(torch.zeros(2))
    opt = FTRL([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = ((p - torch.tensor([1.0, -1.0])) ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(2.0)
    restored = FTRL([p], lr=0.1)
    restored.load_state_dict(opt.state_dict())
    torch.testing.assert_close(restored.state[p]["z"], opt.state[p]["z"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    hp = dict(lr=0.1, beta=1.0, l1=0.5, l2=0.1)
    cpu = nn.Parameter(torch.zeros(6))
    gpu = nn.Parameter(torch.zeros(6, device="cuda"))
    opt_c, opt_g = FTRL([cpu], **hp), FTRL([gpu], **hp)
    for g in GRADS:
        cpu.grad = torch.tensor(g)
        gpu.grad = torch.tensor(g, device="cuda")
        opt_c.step()
        opt_g.step()
    torch.testing.assert_close(gpu.detach().cpu(), cpu.detach())
    bag = nn.EmbeddingBag(10, 1, mode="sum", sparse=True).cuda()
    nn.init.zeros_(bag.weight)
    opt = FTRL(bag.parameters(), **hp)
    bag(torch.tensor([[1, 2, 2]], device="cuda")).sum().backward()
    opt.step()
    assert (bag.weight[[0, 3]] == 0).all() and (bag.weight[[1, 2]] != 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lr=0.0), "lr.*0.0"),
        (dict(lr=-0.1), "lr.*-0.1"),
        (dict(lr=float("nan")), "lr.*nan"),
        (dict(beta=-1.0), "beta.*-1.0"),
        (dict(l1=-0.5), "l1.*-0.5"),
        (dict(l2=-2.0), "l2.*-2.0"),
    ],
)
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FTRL([nn.Parameter(torch.zeros(1))], **kwargs)
