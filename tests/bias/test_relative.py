import pytest
import torch

from posenc.bias.relative import toeplitz


@pytest.mark.parametrize("n,m", [(1, 1), (3, 5), (5, 3), (4, 4)])
def test_toeplitz_entries_and_gradient(n, m):
    x = torch.randn(2, n + m - 1, dtype=torch.float64, requires_grad=True)
    out = toeplitz(x, m)
    assert out.shape == (2, n, m)
    for i in range(n):
        for j in range(m):
            assert torch.equal(out[:, i, j], x[:, j - i + n - 1])
    # the gradient of entry x[t] is the sum of its diagonal
    probe = torch.randn(2, n, m, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * probe).sum(), x)
    want = torch.zeros_like(x)
    for i in range(n):
        for j in range(m):
            want[:, j - i + n - 1] += probe[:, i, j]
    torch.testing.assert_close(grad, want)
