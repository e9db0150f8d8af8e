"""The reference ViT: every vision encoding through ``position=``, grid filled in, checkpoints across grids, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_loss_falls, train_losses

from posenc.models import ViT
from posenc.spatial import SinCos2d
from posenc.vision import PEG, LearnedPatchPosition, RelativeBias2d, Rope2d, RopeMixed, resample_pos_embed

VISION = ["none", "vit_learned", "sincos_2d", "rel_bias_2d", "rope_2d", "rope_mixed", "peg"]


@pytest.mark.parametrize("position", VISION)
@pytest.mark.parametrize("class_token", [True, False])
def test_every_vision_encoding_runs(position, class_token):
    model = ViT((8, 6), 2, 3, in_channels=1, dim=16, depth=2, heads=2, position=position, class_token=class_token,
                pool="cls" if class_token else "mean")
    out = model(torch.randn(2, 1, 8, 6))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    if position != "none":
        assert model.position.grid == (4, 3)
        assert model.position.num_prefix_tokens == int(class_token)


def test_encodings_get_the_model_sizes():
    model = ViT(8, 2, 3, dim=16, depth=3, heads=2, position="rel_bias_2d")
    assert isinstance(model.position, RelativeBias2d) and model.position.heads == 2
    assert len(model.layer_positions) == 2  # Swin: one table per block
    rope = ViT(8, 2, 3, dim=16, heads=2, position="rope_2d").position
    assert isinstance(rope, Rope2d) and rope.head_dim == 8


def test_peg_is_applied_after_the_first_block():
    model = ViT(8, 2, 3, dim=16, depth=2, heads=2, position="peg")
    assert isinstance(model.position, PEG) and model.position.after_block == 0
    seen = {}
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.setdefault("block0", o))
    original = model.position.encode_input

    def spy(x, *, positions):
        seen["peg_in"] = x
        return original(x, positions=positions)

    model.position.encode_input = spy
    model(torch.randn(1, 3, 8, 8))
    torch.testing.assert_close(seen["peg_in"], seen["block0"])


def test_module_position_and_its_grid_is_checked():
    model = ViT(8, 2, 3, dim=16, heads=2, position=LearnedPatchPosition(16, (4, 4), num_prefix_tokens=1))
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 3)
    with pytest.raises(ValueError, match="grid"):
        ViT(8, 2, 3, dim=16, heads=2, position=LearnedPatchPosition(16, (3, 3)))


@pytest.mark.parametrize("position", ["vit_learned", "rel_bias_2d", "peg", "rope_2d", "rope_mixed", "sincos_2d"])
def test_checkpoint_saved_at_one_grid_loads_at_another(position):
    small = ViT(8, 2, 3, dim=16, depth=2, heads=2, position=position)
    big = ViT(12, 2, 3, dim=16, depth=2, heads=2, position=position)
    big.load_state_dict(small.state_dict())  # strict
    torch.testing.assert_close(big.patch_embed.weight, small.patch_embed.weight)
    assert big(torch.randn(1, 3, 12, 12)).shape == (1, 3)
    if position == "vit_learned":
        expected = resample_pos_embed(small.position.weight.detach(), (6, 6), num_prefix_tokens=1)
        torch.testing.assert_close(big.position.weight.detach(), expected)


def test_bad_input():
    with pytest.raises(ValueError, match="image_size"):
        ViT(9, 2, 3)
    with pytest.raises(ValueError, match="image_size"):
        ViT((0, 8), 2, 3)
    with pytest.raises(ValueError, match="dim"):
        ViT(8, 2, 3, dim=10, heads=4)
    with pytest.raises(ValueError, match="head_dim"):
        ViT(8, 2, 3, dim=12, heads=2, position="rope_2d")  # head_dim 6 is not divisible by 4
    with pytest.raises(TypeError, match="not an encoding usable by the ViT"):
        ViT(8, 2, 3, dim=16, heads=2, position="hanet")  # a CNN block, not an attention encoding
    with pytest.raises(ValueError, match="known encodings"):
        ViT(8, 2, 3, dim=16, heads=2, position="no_such_encoding")
    with pytest.raises(ValueError, match="pool"):
        ViT(8, 2, 3, class_token=False)
    with pytest.raises(ValueError, match="images"):
        ViT(8, 2, 3, dim=16, heads=2)(torch.randn(1, 3, 10, 10))
    # a patch sequence no memory holds: named by the model's argument, for every position encoding
    for position in ("vit_learned", "sincos_2d", "rope_2d"):
        with pytest.raises(ValueError, match="`image_size`=.*more than"):
            ViT(10**6, 1, 3, dim=16, heads=2, position=position)


def quadrant_batch(n: int = 32):
    """A bright pixel in one of four quadrants of an 8x8 image; the label is the quadrant."""
    labels = torch.randint(0, 4, (n,))
    images = torch.randn(n, 1, 8, 8) * 0.1
    rows = (labels // 2) * 4 + torch.randint(0, 4, (n,))
    cols = (labels % 2) * 4 + torch.randint(0, 4, (n,))
    images[torch.arange(n), 0, rows, cols] += 3.0
    return images, labels


@pytest.mark.parametrize("position", ["vit_learned", "sincos_2d", "rel_bias_2d", "rope_2d", "rope_mixed", "peg"])
def test_trains_a_few_steps(position):
    torch.manual_seed(0)
    fixed = quadrant_batch(32)
    # depth 2: with one block only the class token's output is read, and it gets no 2-D bias
    model = ViT(8, 2, 4, in_channels=1, dim=32, depth=2, heads=2, position=position)
    losses = train_losses(model, lambda: fixed, F.cross_entropy, steps=60, lr=3e-3)
    assert_loss_falls(losses, factor=0.7)
    for name, param in model.position.named_parameters():  # learned encodings take part in training
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "mlp_ratio,error",
    [(-1, ValueError), (0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("4", TypeError),
     (0.01, ValueError)],  # int(16 * 0.01) = 0 units
)
def test_mlp_ratio_is_checked_by_name(mlp_ratio, error):
    # it used to reach the blocks unchecked: torch's negative-dimension error, int(nan) or a str repeated
    with pytest.raises(error, match="`mlp_ratio`"):
        ViT(8, 4, 10, dim=16, heads=2, mlp_ratio=mlp_ratio)


@pytest.mark.parametrize(
    "encoding,name",
    [
        (lambda: RelativeBias2d(3, (2, 2), num_prefix_tokens=1), "heads=3"),  # ran, reading 2 of its 3 heads
        (lambda: RopeMixed(4, (2, 2), heads=4, num_prefix_tokens=1), "heads=4"),
        (lambda: Rope2d(4, (2, 2), num_prefix_tokens=1), "head_dim=4"),
        (lambda: LearnedPatchPosition(8, (2, 2), num_prefix_tokens=1), "dim=8"),
        (lambda: SinCos2d(16, grid=(2, 2)), "num_prefix_tokens=0"),  # no class-token row
    ],
)
def test_an_encoding_module_built_for_other_sizes_is_refused_when_the_model_is_built(encoding, name):
    # only the grid was compared: the others failed at the first forward inside attention or a rotation,
    # and a 3-head relative bias in a 2-head model ran on the blocked kernel with its first two heads
    with pytest.raises(ValueError, match=f"`position` was built for {name} but the model's"):
        ViT(8, 4, 10, dim=16, heads=2, position=encoding())


@pytest.mark.parametrize("flag", ["no", 0, None])
def test_class_token_must_be_true_or_false(flag):
    # bool("no") is True: the model used to grow a class token the caller had turned off
    with pytest.raises(TypeError, match="`class_token` must be True or False"):
        ViT(8, 4, 10, dim=16, heads=2, class_token=flag, pool="mean")


def test_images_of_another_dtype_or_device_are_refused_by_name():
    model = ViT(8, 4, 10, dim=16, heads=2)
    for dtype in (torch.float64, torch.float16):  # used to fail inside the patch convolution
        with pytest.raises(ValueError, match=f"`images` has dtype {dtype} but the model's parameters are torch.float32"):
            model(torch.randn(2, 3, 8, 8, dtype=dtype))
    with pytest.raises(ValueError, match="`images` is on meta but the model is on cpu"):
        model(torch.randn(2, 3, 8, 8, device="meta"))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts per operation
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    assert model.to(torch.float64)(torch.randn(2, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_materialised_from_meta_equals_a_normal_build():
    # posenc.core.meta.initialize after to_empty() promises a normal build's values under the same
    # seed, the class token (zeros, no draw) included; to_empty() leaves it uninitialised memory
    from posenc.core.meta import initialize

    torch.manual_seed(0)
    normal = ViT(4, 2, 3, in_channels=1, dim=8, depth=1, heads=2, position="sincos_2d")
    with torch.device("meta"):
        meta = ViT(4, 2, 3, in_channels=1, dim=8, depth=1, heads=2, position="sincos_2d")
    meta.to_empty(device="cpu")
    with torch.no_grad():
        meta.cls_token.fill_(float("nan"))  # what uninitialised memory may hold
    torch.manual_seed(0)
    initialize(meta)
    for (key, got), want in zip(meta.state_dict().items(), normal.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "blocked", "flex"])
def test_a_one_head_bias_module_is_shared_by_every_head(backend):
    # the size check refused heads=1 beside a 2-head model, though every backend shares one head's bias
    torch.manual_seed(0)
    bias = RelativeBias2d(1, (2, 2), num_prefix_tokens=1)
    torch.nn.init.normal_(bias.table)
    model = ViT(8, 4, 10, dim=16, heads=2, position=bias, attention=backend).eval()
    reference = ViT(8, 4, 10, dim=16, heads=2, position=bias, attention="eager").eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)
