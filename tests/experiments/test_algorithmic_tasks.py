"""The algorithmic tasks: hand-checked examples per task, shapes, seeding and accuracy masks."""

from __future__ import annotations

import pytest
import torch

from posenc.experiments.algorithmic_tasks import MINUS, PLUS, POP, PUSH0, PUSH1, TASKS, TIMES, get_task

# (task, input, output): each worked out by hand from the task's definition
EXAMPLES = [
    ("even_pairs", [0, 0, 1, 1, 1, 0], [0]),  # one 01 and one 10: even
    ("even_pairs", [0, 1, 0, 1, 0, 0, 1], [1]),  # 01 01 01 and 10 10: five pairs
    ("even_pairs", [1], [0]),
    ("parity_check", [1, 0, 1, 1], [1]),
    ("parity_check", [0, 1, 1, 0, 0], [0]),
    ("cycle_navigation", [2, 0, 1, 0, 0], [3]),  # +1 -1 0 -1 -1 = -2 = 3 (mod 5)
    ("cycle_navigation", [2, 2, 2, 0], [2]),  # +1 +1 +1 -1
    ("modular_arithmetic", [1, PLUS, 2, TIMES, 3], [2]),  # 1 + 6 = 7 = 2
    ("modular_arithmetic", [1, MINUS, 1, MINUS, 1], [4]),  # -1 = 4
    ("modular_arithmetic", [0, TIMES, 1, PLUS, 4, TIMES, 3, MINUS, 2], [0]),  # 0 + 12 - 2 = 10 = 0
    ("modular_arithmetic", [3], [3]),
    ("reverse_string", [1, 1, 0, 1], [1, 0, 1, 1]),
    # stack 0 1 1 0 (bottom to top), PUSH 1, POP, POP -> 0 1 1; top first, termination 2, zeros to n + 1
    ("stack_manipulation", [0, 1, 1, 0, PUSH1, POP, POP], [1, 1, 0, 2, 0, 0, 0, 0]),
    ("stack_manipulation", [1, 1, 0, POP, POP, POP], [2, 0, 0, 0, 0, 0, 0]),
    ("stack_manipulation", [1, POP, POP, PUSH0], [0, 2, 0, 0, 0]),  # POP on an empty stack does nothing
    ("duplicate_string", [1, 0, 0], [1, 0, 0, 1, 0, 0]),
    ("missing_duplicate", [0, 1, 1, 0, 0, 2, 1, 0], [1]),  # 0110 twice, the second copy's 1 hidden
    ("missing_duplicate", [1, 0, 1, 1, 2, 1, 3], [0]),  # 101 twice then the odd-length padding 3
    ("missing_duplicate", [2, 1, 0, 1], [0]),
    ("odds_first", [0, 0, 1, 1, 0, 1, 0, 1], [0, 1, 0, 0, 0, 1, 1, 1]),
    ("odds_first", [1, 1, 0], [1, 0, 1]),
    # 4 + 22 = 26, little-endian: 001 + 01101 = 01011, then termination 2, zeros to n + 1
    ("binary_addition", [0, 0, 1, 2, 0, 1, 1, 0, 1], [0, 1, 0, 1, 1, 2, 0, 0, 0, 0]),
    ("binary_addition", [1, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1], [1, 0, 0, 1, 0, 1, 2, 0, 0, 0, 0, 0]),  # 9 + 32 = 41
    ("bucket_sort", [1, 0, 2, 0, 4, 1, 1, 2], [0, 0, 1, 1, 1, 2, 2, 4]),
]


@pytest.mark.parametrize(("name", "x", "y"), EXAMPLES)
def test_hand_checked_examples(name, x, y):
    task = get_task(name)
    assert task.solve(x) == y
    assert len(y) == task.output_length(len(x))


def test_the_papers_tasks_are_all_there():
    assert set(TASKS) == {
        "even_pairs", "parity_check", "cycle_navigation", "modular_arithmetic", "reverse_string",
        "stack_manipulation", "duplicate_string", "missing_duplicate", "odds_first", "binary_addition", "bucket_sort",
    }  # fmt: skip


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("n", [1, 2, 3, 8, 13])
def test_batches_are_seeded_well_formed_and_solved(name, n):
    task = TASKS[name]
    x, y = task.batch(16, n, torch.Generator().manual_seed(n))
    x2, y2 = task.batch(16, n, torch.Generator().manual_seed(n))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (16, task.input_length(n)) and y.shape == (16, task.output_length(n))
    assert x.min() >= 0 and x.max() < task.input_vocab and y.min() >= 0 and y.max() < task.classes
    assert [task.solve(row) for row in x.tolist()] == y.tolist()


def test_inputs_follow_the_formats():
    g = torch.Generator().manual_seed(0)
    x, _ = TASKS["modular_arithmetic"].batch(64, 10, g)  # even length: lowered to 9
    assert x.shape[1] == 9 and (x[:, ::2] < 5).all() and (x[:, 1::2] >= 5).all()
    x, _ = TASKS["stack_manipulation"].batch(64, 12, g)
    for row in x.tolist():  # bits first (at least one), then actions only
        first_action = next((i for i, t in enumerate(row) if t >= POP), len(row))
        assert first_action >= 1 and all(t >= POP for t in row[first_action:])
    x, _ = TASKS["missing_duplicate"].batch(64, 9, g)
    assert ((x == 2).sum(1) == 1).all() and (x[:, -1] == 3).all()
    x, _ = TASKS["binary_addition"].batch(64, 12, g)
    assert ((x == 2).sum(1) == 1).all()
    assert (x[:, 0] != 2).all() and (x[:, -1] != 2).all()  # both numbers have at least one bit


def test_accuracy_mask_stops_at_the_termination_token():
    task = TASKS["binary_addition"]
    targets = torch.tensor([[1, 0, 2, 0, 0], [1, 1, 1, 1, 2]])
    assert task.accuracy_mask(targets).tolist() == [[True, True, True, False, False], [True] * 5]
    assert TASKS["reverse_string"].accuracy_mask(torch.tensor([[0, 2]])).all()


def test_unknown_task_and_bad_length():
    with pytest.raises(ValueError, match="parity_check"):
        get_task("parity_chek")
    with pytest.raises(ValueError, match="`n`"):
        TASKS["parity_check"].batch(2, 0, torch.Generator())
