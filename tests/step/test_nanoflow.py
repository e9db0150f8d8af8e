"""The shared-parameter affine-coupling flow conditioned on NanoFlow's flow-index embedding."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.step import NanoFlow


def ring_of_gaussians(n, generator):
    """Eight Gaussians of std 0.25 on a circle of radius 2."""
    angle = torch.randint(0, 8, (n,), generator=generator).double() * (2 * math.pi / 8)
    centres = torch.stack((2 * angle.cos(), 2 * angle.sin()), dim=-1)
    return (centres + 0.25 * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def randomise(flow, std=0.3):
    """Give the (zero-initialised) output layer random weights, so the flow is not the identity."""
    with torch.no_grad():
        flow.net[-1].weight.normal_(std=std)
        flow.net[-1].bias.normal_(std=std)
    return flow


def test_log_det_matches_autograd_jacobian_in_float64():
    flow = randomise(NanoFlow(2, 4, hidden=8, embed_dim=3, dtype=torch.float64))
    x = torch.randn(3, 2, dtype=torch.float64)
    _, log_det = flow(x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v)[0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jac)[1])


def test_log_prob_is_a_density():
    # integrates to about 1 over a grid covering the mass of a gently transformed normal
    flow = randomise(NanoFlow(2, 3, hidden=8, embed_dim=2, dtype=torch.float64), std=0.1)
    grid = torch.linspace(-8, 8, 321, dtype=torch.float64)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)
    with torch.no_grad():
        mass = flow.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass.item() - 1.0) < 1e-2


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_inverse_reconstructs_any_shape(dim):
    flow = randomise(NanoFlow(dim, 5, hidden=16, embed_dim=4))
    x = torch.randn(4, 6, dim)
    z, log_det = flow(x)
    assert z.shape == x.shape and log_det.shape == (4, 6)
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-4, rtol=0)
    assert flow.sample(7).shape == (7, dim)


def test_flow_steps_share_the_network_but_not_the_transform():
    flow = randomise(NanoFlow(2, 2, hidden=8, embed_dim=4))
    x_a = torch.randn(5, 1)
    _s0, t0 = flow._scale_shift(x_a, 0)
    _s1, t1 = flow._scale_shift(x_a, 1)
    assert not torch.allclose(t0, t1)  # the index embedding alone tells the steps apart
    coupling_params = sum(p.numel() for p in flow.net.parameters())
    assert sum(p.numel() for p in flow.parameters()) == coupling_params + flow.flow_embedding.weight.numel()


def test_trains_on_a_2d_toy_density_and_inverts():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    flow = NanoFlow(2, 8, hidden=32, embed_dim=4)
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    log_likelihood = []
    for _ in range(250):
        loss = -flow.log_prob(ring_of_gaussians(256, gen)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        log_likelihood.append(-loss.item())
    first, last = sum(log_likelihood[:10]) / 10, sum(log_likelihood[-10:]) / 10
    assert last > first + 1.0, (first, last)
    x = ring_of_gaussians(512, gen)
    with torch.no_grad():
        z, _ = flow(x)
        torch.testing.assert_close(flow.inverse(z), x, atol=1e-4, rtol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="dim"):
        NanoFlow(1)
    with pytest.raises(ValueError, match="num_flows"):
        NanoFlow(2, 0)
    flow = NanoFlow(2, 2)
    with pytest.raises(ValueError, match="`x`"):
        flow(torch.randn(3, 3))
    with pytest.raises(ValueError, match="`z`"):
        flow.inverse(torch.randn(3))


def test_data_of_another_dtype_is_refused_by_name():
    # float64 data for a float32 flow used to fail inside its first linear layer
    # ('mat1 and mat2 must have the same dtype, but got Double and Float')
    flow = NanoFlow(2, 2, hidden=4, embed_dim=2)
    with pytest.raises(ValueError, match="`x` has dtype torch.float64 but the flow's parameters are torch.float32"):
        flow(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="`z` has dtype torch.float64"):
        flow.inverse(torch.zeros(3, 2, dtype=torch.float64))


def test_constructor_arguments_are_refused_by_their_own_names():
    # embed_dim=0 was refused as '`dim` must be >= 1' (the flow-index embedding's argument), and a
    # conditioner width past memory reached the allocator ('DefaultCPUAllocator: can't allocate memory')
    with pytest.raises(ValueError, match="`embed_dim` must be >= 1, got 0"):
        NanoFlow(3, 2, embed_dim=0)
    with pytest.raises(TypeError, match="`embed_dim` must be an int"):
        NanoFlow(3, 2, embed_dim="8")
    with pytest.raises(ValueError, match="`hidden`=10000000 needs"):
        NanoFlow(2, 8, hidden=10**7)


def test_sample_count_is_checked_by_name():
    # sample(-1) failed inside torch.randn ('Trying to create tensor with negative dimension -1'),
    # sample(2.5) with randn's list of overloads, sample(10**12) in the allocator
    flow = NanoFlow(2, 2, hidden=4, embed_dim=2)
    assert flow.sample(0).shape == (0, 2)
    with pytest.raises(ValueError, match="`n` must be >= 0, got -1"):
        flow.sample(-1)
    with pytest.raises(TypeError, match="`n` must be an int, got float 2.5"):
        flow.sample(2.5)
    with pytest.raises(ValueError, match="`n`=1000000000000 needs"):
        flow.sample(10**12)


def test_materialised_from_meta_equals_a_normal_build():
    # the zero last layer was drawn in __init__ only: materialize() (and initialize()) gave it nn.Linear's
    # random draw, so the flow no longer started as the identity (log-det 0.86, weights off by 0.49)
    from posenc.core.meta import materialize

    torch.manual_seed(7)
    normal = NanoFlow(2, 3, hidden=4, embed_dim=2)
    with torch.device("meta"):
        meta = NanoFlow(2, 3, hidden=4, embed_dim=2)
    torch.manual_seed(7)
    built = materialize(meta, "cpu")
    for (name, want), (_, got) in zip(normal.named_parameters(), built.named_parameters(), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0, msg=name)
    _, log_det = built(torch.randn(5, 2))
    assert torch.equal(log_det, torch.zeros(5))
