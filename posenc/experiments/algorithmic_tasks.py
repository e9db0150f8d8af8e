"""The algorithmic tasks of Delétang et al. 2023 (arXiv:2207.02098), as used for length
generalisation by Ruoss et al. 2023 (arXiv:2305.16843).

Every task maps an input string of length ``n`` over a small alphabet to an output of a fixed length
(``Task.output_length(n)``) over ``Task.classes`` classes. The definitions follow the paper and its
reference code: input alphabets, output lengths, the termination token and zero padding of
``stack_manipulation`` and ``binary_addition``, odd lengths for ``modular_arithmetic`` (an even ``n``
is lowered by one), the padding token of ``missing_duplicate`` for odd ``n``. Accuracy counts the
output tokens up to the termination token (``Task.accuracy_mask``), as the reference does.

Each task has a pure ``solve(tokens) -> output`` on Python lists (checked by hand in the tests) and
draws its inputs from a ``torch.Generator``, so a seeded batch is reproducible.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from posenc.core.suggest import did_you_mean
from posenc.core.validation import check_int

Solver = Callable[[list[int]], list[int]]
Sampler = Callable[[int, torch.Generator], list[int]]


@dataclass(frozen=True)
class Task:
    """One task: ``sample(n, generator)`` draws an input, ``solve(input)`` gives its output."""

    name: str
    level: str  # "regular", "context-free" or "context-sensitive" (Chomsky hierarchy)
    input_vocab: int
    classes: int
    output_length: Callable[[int], int]
    sample: Sampler
    solve: Solver
    terminated: bool = False  # the output ends with a termination token (class 2) and zero padding

    def input_length(self, n: int) -> int:
        """The length of the input actually drawn for a nominal length ``n``."""
        if self.name == "modular_arithmetic" and n % 2 == 0:
            return n - 1
        return n

    def accuracy_mask(self, targets: torch.Tensor) -> torch.Tensor:
        """``(b, m)`` bool: the output tokens that count towards accuracy (up to the termination token)."""
        if not self.terminated:
            return torch.ones_like(targets, dtype=torch.bool)
        end = (targets == 2).int().argmax(dim=-1, keepdim=True)
        return torch.arange(targets.shape[-1]).unsqueeze(0) <= end

    def batch(self, batch: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs (batch, input_length(n)), targets (batch, output_length(n)))``, int64."""
        check_int("n", n, minimum=1)
        check_int("batch", batch, minimum=1)
        inputs = [self.sample(n, generator) for _ in range(batch)]
        targets = [self.solve(x) for x in inputs]
        return torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long)


def _bits(n: int, generator: torch.Generator, high: int = 2) -> list[int]:
    return torch.randint(0, high, (n,), generator=generator).tolist()


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in ``[low, high)``."""
    return int(torch.randint(low, high, (1,), generator=generator))


# -- regular --------------------------------------------------------------------------------------


def solve_even_pairs(x: list[int]) -> list[int]:
    """Class 0 when the number of ``01`` and ``10`` pairs is even, 1 otherwise."""
    return [sum(a != b for a, b in itertools.pairwise(x)) % 2]


def solve_parity_check(x: list[int]) -> list[int]:
    """Class 0 when the number of 1s is even, 1 otherwise."""
    return [sum(x) % 2]


def solve_cycle_navigation(x: list[int]) -> list[int]:
    """Final position on a cycle of 5 starting at 0; token ``t`` moves by ``t - 1`` (0 left, 1 stay, 2 right)."""
    return [sum(t - 1 for t in x) % 5]


#: modular_arithmetic's tokens: the residues 0..4, then these operators.
MOD, PLUS, MINUS, TIMES = 5, 5, 6, 7


def solve_modular_arithmetic(x: list[int]) -> list[int]:
    """Value mod 5 of ``r0 op r1 op ...`` with ``*`` binding tighter than ``+`` and ``-``."""
    total, term, sign = 0, x[0], 1
    for op, r in zip(x[1::2], x[2::2]):
        if op == TIMES:
            term = term * r
        else:
            total += sign * term
            term, sign = r, (1 if op == PLUS else -1)
    return [(total + sign * term) % MOD]


def _sample_modular(n: int, generator: torch.Generator) -> list[int]:
    n = n if n % 2 else n - 1
    residues = _bits(n // 2 + 1, generator, high=MOD)
    ops = [MOD + o for o in _bits(n // 2, generator, high=3)]
    out = [residues[0]]
    for op, r in zip(ops, residues[1:]):
        out += [op, r]
    return out


# -- context-free (deterministic) -----------------------------------------------------------------


def solve_reverse_string(x: list[int]) -> list[int]:
    return x[::-1]


#: stack_manipulation's action tokens (the stack's own bits are 0 and 1).
POP, PUSH0, PUSH1 = 2, 3, 4


def solve_stack_manipulation(x: list[int]) -> list[int]:
    """The stack (given bottom to top, then actions) after the actions, top to bottom, then the
    termination token 2, zero padded to ``len(x) + 1``; POP on an empty stack does nothing."""
    stack: list[int] = []
    for t in x:
        if t in (0, 1):  # the initial stack (actions are >= 2)
            stack.append(t)
        elif t == POP:
            if stack:
                stack.pop()
        else:
            stack.append(t - PUSH0)
    out = stack[::-1] + [2]
    return out + [0] * (len(x) + 1 - len(out))


def _sample_stack(n: int, generator: torch.Generator) -> list[int]:
    if n == 1:
        return _bits(1, generator)
    size = _randint(1, n, generator)
    return _bits(size, generator) + [POP + a for a in _bits(n - size, generator, high=3)]


# -- context-sensitive ----------------------------------------------------------------------------


def solve_duplicate_string(x: list[int]) -> list[int]:
    return x + x


#: missing_duplicate's tokens: bits, the missing marker, the padding of an odd length.
MISSING, PAD = 2, 3


def solve_missing_duplicate(x: list[int]) -> list[int]:
    """The bit hidden by the marker 2 in ``ss`` (then padding 3 when the length is odd)."""
    half = len(x) // 2
    i = x.index(MISSING)
    other = i + half if i < half else i - half
    return [x[other]]


def _sample_missing(n: int, generator: torch.Generator) -> list[int]:
    if n == 1:  # no substring to duplicate: the reference's fixed input and output
        return [1]
    s = _bits(n // 2, generator)
    doubled = s + s
    doubled[_randint(0, len(doubled), generator)] = MISSING
    return doubled + [PAD] * (n % 2)


def _solve_missing_or_trivial(x: list[int]) -> list[int]:
    return [1] if x == [1] else solve_missing_duplicate(x)


def solve_odds_first(x: list[int]) -> list[int]:
    """``s1 s3 s5 ... s2 s4 ...`` (1-based odd positions first)."""
    return x[0::2] + x[1::2]


def solve_binary_addition(x: list[int]) -> list[int]:
    """``a 2 b`` (little-endian bits, 2 separates) -> the sum in little-endian bits without trailing
    zeros (0 is written ``0``), then the termination token 2, zero padded to ``len(x) + 1``."""
    if 2 in x:
        i = x.index(2)
        total = _from_bits(x[:i]) + _from_bits(x[i + 1 :])
    else:  # the reference's short inputs (n <= 2): a single number
        total = _from_bits(x)
    bits = [int(c) for c in reversed(f"{total:b}")]  # 0 is the single bit 0
    out = bits + [2]
    return out + [0] * (len(x) + 1 - len(out))


def _from_bits(bits: list[int]) -> int:
    return sum(b << k for k, b in enumerate(bits))


def _sample_addition(n: int, generator: torch.Generator) -> list[int]:
    if n <= 2:
        value = _randint(0, 2**n - 1, generator)
        return [(value >> k) & 1 for k in range(n)]
    len_a = _randint(1, n - 1, generator)
    len_b = n - 1 - len_a
    a = _randint(1, 2**len_a, generator) if len_a < 63 else _big(len_a, generator)
    b = _randint(1, 2**len_b, generator) if len_b < 63 else _big(len_b, generator)
    return [(a >> k) & 1 for k in range(len_a)] + [2] + [(b >> k) & 1 for k in range(len_b)]


def _big(bits: int, generator: torch.Generator) -> int:
    """Uniform in ``[1, 2**bits)`` for widths past int64."""
    while True:
        value = _from_bits(_bits(bits, generator))
        if value:
            return value


def solve_bucket_sort(x: list[int]) -> list[int]:
    return sorted(x)


def _binary(n: int, generator: torch.Generator) -> list[int]:
    return _bits(n, generator)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("even_pairs", "regular", 2, 2, lambda n: 1, _binary, solve_even_pairs),
        Task("parity_check", "regular", 2, 2, lambda n: 1, _binary, solve_parity_check),
        Task("cycle_navigation", "regular", 3, 5, lambda n: 1, lambda n, g: _bits(n, g, 3), solve_cycle_navigation),
        Task("modular_arithmetic", "regular", 8, 5, lambda n: 1, _sample_modular, solve_modular_arithmetic),
        Task("reverse_string", "context-free", 2, 2, lambda n: n, _binary, solve_reverse_string),
        Task(
            "stack_manipulation", "context-free", 5, 3, lambda n: n + 1, _sample_stack, solve_stack_manipulation,
            terminated=True,
        ),
        Task("duplicate_string", "context-sensitive", 2, 2, lambda n: 2 * n, _binary, solve_duplicate_string),
        Task("missing_duplicate", "context-sensitive", 4, 2, lambda n: 1, _sample_missing, _solve_missing_or_trivial),
        Task("odds_first", "context-sensitive", 2, 2, lambda n: n, _binary, solve_odds_first),
        Task(
            "binary_addition", "context-sensitive", 3, 3, lambda n: n + 1, _sample_addition, solve_binary_addition,
            terminated=True,
        ),
        Task("bucket_sort", "context-sensitive", 5, 5, lambda n: n, lambda n, g: _bits(n, g, 5), solve_bucket_sort),
    )
}  # fmt: skip


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} for `task`{did_you_mean(name, TASKS)}; known: {', '.join(TASKS)}")
    return TASKS[name]
