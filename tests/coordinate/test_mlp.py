"""The coordinate MLP, and Tancik et al.'s claim: Fourier features let an MLP fit high frequencies."""

from __future__ import annotations

import math

import pytest
import torch

from posenc.coordinate import CoordinateMLP, FourierFeatures, NeRFEncoding


def fit(model, x, y, steps=200, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return ((model(x) - y) ** 2).mean().item()


def signal(x):
    """Frequencies 2, 13 and 29 cycles per unit: the last two are far above a raw-coordinate MLP's reach."""
    two_pi_x = 2 * math.pi * x
    return torch.sin(2 * two_pi_x) + 0.5 * torch.sin(13 * two_pi_x) + 0.3 * torch.sin(29 * two_pi_x)


def test_gaussian_fourier_features_fit_high_frequencies_far_better_than_raw_coordinates():
    x = torch.linspace(0, 1, 128).unsqueeze(-1)
    y = signal(x)
    torch.manual_seed(0)
    raw = fit(CoordinateMLP(1, 1, width=64, depth=3), x, y)
    torch.manual_seed(0)
    encoding = FourierFeatures(1, num_features=32, sigma=10.0)
    features = fit(CoordinateMLP(1, 1, encoding=encoding, width=64, depth=3), x, y)
    assert raw > 0.05  # raw coordinates are still far from the signal (its variance is about 0.67)
    assert features < 0.01 * raw, (features, raw)


def test_layers_and_shapes():
    model = CoordinateMLP(2, 3, encoding="nerf", num_frequencies=4, width=16, depth=3)
    assert isinstance(model.encoding, NeRFEncoding)
    assert model.net[0].in_features == model.encoding.out_dim == 18
    linears = [m for m in model.net if isinstance(m, torch.nn.Linear)]
    relus = [m for m in model.net if isinstance(m, torch.nn.ReLU)]
    assert len(linears) == 3 and len(relus) == 2
    assert model(torch.randn(4, 5, 2)).shape == (4, 5, 3)
    assert CoordinateMLP(2, 1, depth=1)(torch.randn(7, 2)).shape == (7, 1)


def test_half_precision_network_with_float_coordinates():
    model = CoordinateMLP(2, 1, encoding="fourier_features", num_features=8, width=8, depth=2, dtype=torch.bfloat16)
    assert model(torch.randn(3, 2)).dtype == torch.bfloat16


def test_bad_input():
    with pytest.raises(ValueError, match="depth"):
        CoordinateMLP(2, 1, depth=0)
    with pytest.raises(ValueError, match="encoding"):
        CoordinateMLP(2, 1, encoding=NeRFEncoding(3, 2))
    with pytest.raises(ValueError, match="in_dim=2"):
        CoordinateMLP(2, 1)(torch.randn(4, 3))
    with pytest.raises(TypeError, match="encoding"):
        CoordinateMLP(2, 1, num_frequencies=3)


def test_encodings_the_mlp_cannot_call_are_refused_when_built():
    from posenc.coordinate import IntegratedPE

    with pytest.raises(ValueError, match="`encoding`='rope' is a rotary encoding.*takes .*nerf"):
        CoordinateMLP(2, 1, encoding="rope", head_dim=8)
    # IntegratedPE also needs a covariance: a model built with it could never be called
    with pytest.raises(ValueError, match="`encoding` IntegratedPE takes more than the coordinates"):
        CoordinateMLP(3, 1, encoding="integrated_pe")
    with pytest.raises(ValueError, match="`encoding` IntegratedPE"):
        CoordinateMLP(3, 1, encoding=IntegratedPE(3))


def test_dtype_and_non_finite_coordinates_are_refused_by_name():
    with pytest.raises(ValueError, match="`dtype` must be a floating-point dtype"):
        CoordinateMLP(2, 1, dtype=torch.int64)
    with pytest.raises(ValueError, match="`x` must be finite"):
        CoordinateMLP(2, 1)(torch.tensor([[0.5, math.nan]]))  # raw coordinates: no encoding to check them


@pytest.mark.parametrize("name", ["hash_grid", "kplanes", "fourier_features", "nerf"])
def test_an_encoding_named_by_the_mlp_takes_its_dtype(name):
    # the network was float64 while a hash grid's or K-planes' tables stayed float32
    from posenc.core.registry import get

    if name not in {info.name for info in __import__("posenc").available()} or get(name).family != "coordinate":
        pytest.skip(f"{name} is not a registered coordinate encoding")
    mlp = CoordinateMLP(3, 2, encoding=name, width=8, depth=2, dtype=torch.float64)
    kept = {f"encoding.{name}" for name in mlp.encoding.keep_dtype_buffers}  # fixed draws keep theirs
    named = (*mlp.named_parameters(), *mlp.named_buffers())
    floats = [t for name, t in named if t.is_floating_point() and name not in kept]
    assert floats and all(t.dtype == torch.float64 for t in floats), {t.dtype for t in floats}
    assert mlp(torch.rand(5, 3, dtype=torch.float64)).dtype == torch.float64
