"""Argument checks shared by every encoding (posenc/core/validation.py)."""

from __future__ import annotations

import pytest
import torch

from posenc.core.validation import check_fits, check_tensor


def test_check_fits_names_the_argument_past_the_device_memory():
    with pytest.raises(ValueError, match=r"`rows`=10000000000000 needs a \(10000000000000, 8\) torch.float32 tensor"):
        check_fits("rows", 10**13, (10**13, 8), torch.float32, "cpu")
    check_fits("rows", 4, (4, 8), torch.float32, "cpu")


def test_check_fits_refuses_sizes_no_tensor_can_describe_even_on_meta():
    # meta holds no memory, but torch still refuses a storage of 2**63 bytes or more
    check_fits("rows", 10**13, (10**13, 8), torch.float32, "meta")
    with pytest.raises(ValueError, match="`rows`=.* more than a tensor can hold"):
        check_fits("rows", 10**12, (10**12, 10**12), torch.float32, "meta")


def test_check_table_fits_names_the_largest_size():
    from posenc.core.validation import check_table_fits

    with pytest.raises(ValueError, match=r"`grid`=\(100000, 100000\) needs"):
        check_table_fits({"grid": (10**5, 10**5), "dim": 10**4}, (10**10, 10**4), None, "cpu")
    with pytest.raises(ValueError, match="`dim`=1000000000000 needs"):
        check_table_fits({"heads": 8, "dim": 10**12}, (8, 10**12), torch.float64, "cpu")
    check_table_fits({"heads": 8, "dim": 64}, (8, 64), None, "cpu")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_check_float_refuses_values_that_are_not_finite(value):
    from posenc.core.validation import check_float

    with pytest.raises(ValueError, match="`base` must be finite"):
        check_float("base", value)
    assert check_float("base", 1e308) == 1e308 and check_float("base", -3) == -3.0


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024])
def test_check_float_refuses_an_int_past_float64_by_name(value):
    # float(10**400) raised a bare OverflowError ('int too large to convert to float') from every float
    # argument's check: apply_rope(x, p, base=10**400), sinusoidal(3, 8, base=10**400), log_spaced, ...
    from posenc.core.validation import check_float
    from posenc.functional import apply_rope

    with pytest.raises(ValueError, match=r"^`base` must be finite, got an int of \d+ bits, past float64's range$"):
        check_float("base", value)
    with pytest.raises(ValueError, match="^`base` must be finite"):
        apply_rope(torch.zeros(1, 1, 2, 8), torch.arange(2), base=value)
    assert check_float("base", 2**1023) == 2.0**1023


def test_check_float_traces_a_symbolic_float_in_one_graph():
    # torch.compile(dynamic=True) makes Python floats symbolic; math.isfinite on them breaks the graph
    from posenc.core.validation import check_float

    torch._dynamo.reset()
    compiled = torch.compile(lambda x, s: x * check_float("scale", s, positive=True), fullgraph=True, dynamic=True,
                             backend="eager")
    torch.testing.assert_close(compiled(torch.ones(3), 2.5), torch.full((3,), 2.5))


def test_sparse_tensors_are_refused_by_name():
    """A sparse tensor used to reach torch's own errors ("unsupported memory format", "can't convert
    Sparse layout tensor to numpy") from inside the encodings."""
    sparse = torch.eye(4).to_sparse()
    with pytest.raises(ValueError, match="`x` must be a dense"):
        check_tensor("x", sparse)
    from posenc.functional import apply_rope

    q = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="`x` must be a dense"):
        apply_rope(q.to_sparse(), torch.arange(4))
    with pytest.raises(ValueError, match="`positions` must be a dense"):
        apply_rope(q, torch.arange(4).to_sparse())


def test_broadcast_checks_trace_a_fixed_size_against_a_traced_one():
    # `v in (1, s)` with v a parameter's fixed size and s a traced size of the same value is False to
    # dynamo, which refused a valid call while tracing; the checks compare one by one
    from posenc.core.validation import check_broadcasts

    weight = torch.nn.Parameter(torch.randn(3, 1))

    def scaled(x):
        check_broadcasts("weight", weight, tuple(x.shape), to="x")
        return x * weight

    compiled = torch.compile(scaled, fullgraph=True, dynamic=True)
    for width in (5, 7):
        x = torch.randn(3, width)
        torch.testing.assert_close(compiled(x), scaled(x))


def test_value_checks_step_aside_under_vmap():
    # check_finite and check_nonnegative_positions read the tensor on the host, which a vmapped tensor
    # cannot do ('vmap: It looks like you're attempting to use a Tensor in some data-dependent control
    # flow'): vmap over float positions or coordinates failed inside every encoding that checks them
    from posenc.core.validation import check_finite, check_nonnegative_positions

    xs = torch.rand(3, 4)
    torch.testing.assert_close(torch.vmap(lambda x: check_finite("x", x) * 2)(xs), xs * 2)
    torch.testing.assert_close(torch.vmap(lambda x: check_nonnegative_positions("x", x) + 1)(xs), xs + 1)
    with pytest.raises(ValueError, match="`x` must be finite"):  # eager calls still check
        check_finite("x", torch.tensor([float("nan")]))
