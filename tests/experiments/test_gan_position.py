"""gan_position: the Fréchet distance against closed forms, the fixed feature extractor, and the claim.

The claim test trains the quick configuration (every input: the claim compares them); it is the
same run as ``posenc run gan_position --quick``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from posenc.experiments import get_experiment, run_experiment
from posenc.experiments.gan_position import (
    SIZE,
    extractor_r2,
    feature_extractor,
    fid_like,
    frechet_distance,
    gaussian_fit,
    toy_batch,
    toy_images,
)


def random_cov(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def random_rotation(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


# ---------------------------------------------------------------------------------------------
# the Fréchet distance


def test_identical_gaussians_are_at_distance_zero():
    mu, cov = torch.randn(6, dtype=torch.float64), random_cov(6, 1)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-9


def test_shifted_means_give_the_squared_shift():
    cov = random_cov(5, 2)
    mu1 = torch.tensor([0.0, 1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, -1.0, 0.0, 0.5, 1.0], dtype=torch.float64)
    assert frechet_distance(mu1, cov, mu2, cov) == pytest.approx(1 + 4 + 4 + 0 + 4, abs=1e-9)


def test_diagonal_covariances_give_the_sum_of_squared_root_differences():
    a = torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64)
    b = torch.tensor([4.0, 1.0, 0.25, 0.0], dtype=torch.float64)
    zero = torch.zeros(4, dtype=torch.float64)
    expected = sum((math.sqrt(x) - math.sqrt(y)) ** 2 for x, y in zip(a.tolist(), b.tolist()))  # 1 + 1 + 0 + 9
    assert frechet_distance(zero, torch.diag(a), zero, torch.diag(b)) == pytest.approx(expected, abs=1e-9)


@given(
    st.lists(st.floats(0.0, 5.0), min_size=3, max_size=3),
    st.lists(st.floats(0.0, 5.0), min_size=3, max_size=3),
    st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    st.integers(0, 1000),
)
def test_commuting_covariances_match_the_closed_form(a, b, shift, seed):
    # covariances sharing the eigenbasis q: the distance is |shift|^2 + sum (sqrt a_i - sqrt b_i)^2
    q = random_rotation(3, seed)
    cov1 = q @ torch.diag(torch.tensor(a, dtype=torch.float64)) @ q.T
    cov2 = q @ torch.diag(torch.tensor(b, dtype=torch.float64)) @ q.T
    mu1 = torch.zeros(3, dtype=torch.float64)
    mu2 = torch.tensor(shift, dtype=torch.float64)
    expected = sum(s * s for s in shift) + sum((math.sqrt(x) - math.sqrt(y)) ** 2 for x, y in zip(a, b))
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, abs=1e-6)


def test_general_covariances_symmetric_rotation_invariant_and_float64():
    c1, c2 = random_cov(4, 3), random_cov(4, 4)
    mu1, mu2 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    d = frechet_distance(mu1, c1, mu2, c2)
    assert d > 0
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(d, rel=1e-9)
    q = random_rotation(4, 5)
    assert frechet_distance(q @ mu1, q @ c1 @ q.T, q @ mu2, q @ c2 @ q.T) == pytest.approx(d, rel=1e-9)
    # float32 inputs are computed in float64: the same value
    assert frechet_distance(mu1.float(), c1.float(), mu2.float(), c2.float()) == pytest.approx(d, rel=1e-5)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with the standard deviations s
    one = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[9.0]]))
    assert one == pytest.approx(4 + 1, abs=1e-9)


def test_frechet_bad_inputs_name_the_argument():
    mu, cov = torch.zeros(3), torch.eye(3)
    with pytest.raises(ValueError, match="mu1"):
        frechet_distance(torch.zeros(3, 1), cov, mu, cov)
    with pytest.raises(ValueError, match="mu2"):
        frechet_distance(mu, cov, torch.zeros(4), cov)
    with pytest.raises(ValueError, match="cov2"):
        frechet_distance(mu, cov, mu, torch.eye(2))
    with pytest.raises(ValueError, match="features"):
        gaussian_fit(torch.zeros(1, 3))


def test_gaussian_fit_is_the_unbiased_float64_moment():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    mu, cov = gaussian_fit(x)
    assert mu.dtype == cov.dtype == torch.float64
    xd = x.double()
    expected = sum(torch.outer(r - xd.mean(0), r - xd.mean(0)) for r in xd) / 49
    torch.testing.assert_close(mu, xd.mean(0))
    torch.testing.assert_close(cov, expected)


# ---------------------------------------------------------------------------------------------
# the feature extractor and the score


def test_toy_batch_parameters_describe_the_images():
    images, params = toy_batch(64, torch.Generator().manual_seed(0))
    assert images.shape == (64, 1, SIZE, SIZE) and params.shape == (64, 3)
    torch.testing.assert_close(images, toy_images(64, torch.Generator().manual_seed(0)))
    # with the background gradient 0.4 x / 15 taken away, the disc's centroid is its centre and its peak the brightness
    axis = torch.arange(SIZE).float()
    disc = (images[:, 0] - 0.4 * axis / (SIZE - 1)).clamp_min(0)
    w = disc / disc.sum(dim=(1, 2), keepdim=True)
    cx, cy = (w * axis.view(1, 1, SIZE)).sum(dim=(1, 2)), (w * axis.view(1, SIZE, 1)).sum(dim=(1, 2))
    assert (cx - params[:, 0]).abs().max() < 0.1 and (cy - params[:, 1]).abs().max() < 0.1
    assert ((disc.flatten(1).amax(1) - params[:, 2]).abs() < 0.25).all()


def test_extractor_is_fixed_and_sees_the_disc():
    net = feature_extractor()
    assert net is feature_extractor() and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    assert min(extractor_r2()) > 0.9


def test_fid_like_separates_real_from_wrong_images():
    real = toy_images(500, torch.Generator().manual_seed(1))
    real2 = toy_images(500, torch.Generator().manual_seed(2))
    flat = real.mean(dim=(2, 3), keepdim=True).expand_as(real)  # each image's mean, everywhere
    moved = real.flip(-1)  # the disc on the wrong side
    floor = fid_like(real, real2)
    assert floor >= 0
    assert fid_like(real, flat) > 50 * max(floor, 1e-3)
    assert fid_like(real, moved) > 50 * max(floor, 1e-3)


# ---------------------------------------------------------------------------------------------
# the claim


def test_no_position_information_gives_a_clearly_worse_fid():
    m = run_experiment(get_experiment("gan_position"), quick=True, out=None, progress=False, device="cpu")["metrics"]
    fid = m["fid"]
    assert set(fid) == set(m["headline"]) == {"none", "constant", "cartesian", "sinusoidal"}
    worst_with_position = max(fid["constant"], fid["cartesian"], fid["sinusoidal"])
    # quick runs (seeds 0-2): none 125-270, the others 0.6-3.2, the real-vs-real floor about 0.01-0.05
    assert fid["none"] >= 20 * worst_with_position
    assert fid["none"] - worst_with_position >= 50
    assert m["fid_real"] < worst_with_position


def test_one_evaluation_sample_is_refused_before_training():
    # it used to train the first generator, then fail in gaussian_fit ('`features` must be an (n, d) tensor')
    with pytest.raises(ValueError, match="`eval_samples` must be at least 2.*got 1"):
        run_experiment(get_experiment("gan_position"), quick=True, out=None, device="cpu", progress=False,
                       overrides={"eval_samples": 1})
