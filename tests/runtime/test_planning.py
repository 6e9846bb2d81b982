"""Planning is a pure function: grid + outputs + settings + receptive field -> a plan."""

from __future__ import annotations

import pytest

from emzoo.errors import UsageError
from emzoo.package.spec import SizeRule
from emzoo.runtime.planning import GridAxis, OutputPlan, needs_receptive_field, plan_tiles
from emzoo.runtime.settings import DeviceSpec, TileSettings
from emzoo.runtime.tiling import OutputAxisMap

RULE = SizeRule(min=64, step=16)


def _grid(length: int):
    grid = (GridAxis("y", length, RULE, (1,)), GridAxis("x", length, RULE, (2,)))
    outputs = {"prob": OutputPlan(dims=(1, 2), maps=(OutputAxisMap(), OutputAxisMap()), halos=(0, 0))}
    return grid, outputs


def test_a_small_image_is_one_block_and_needs_no_receptive_field():
    grid, outputs = _grid(300)
    assert not needs_receptive_field(grid, outputs, TileSettings(), device="cpu")
    plan = plan_tiles(grid, outputs, TileSettings(), device="cpu", receptive_field=None)
    assert plan.n_tiles == 1 and [a.block for a in plan.axes] == [304, 304]
    assert [a.halo for a in plan.axes] == [0, 0]


def test_a_large_image_gets_a_halo_that_covers_the_receptive_field():
    grid, outputs = _grid(3000)
    assert needs_receptive_field(grid, outputs, TileSettings(), device="cpu")
    plan = plan_tiles(grid, outputs, TileSettings(), device="cpu", receptive_field=[40, 40])
    assert plan.n_tiles > 1
    assert all(a.halo >= 42 and a.blend == 0 for a in plan.axes)  # 40 px + the 2 px margin
    assert all(RULE.accepts(a.block) and a.block <= 768 for a in plan.axes)
    # the same inputs give the same plan: nothing is measured or cached inside
    assert plan == plan_tiles(grid, outputs, TileSettings(), device="cpu", receptive_field=[40, 40])


def test_given_halo_and_blend_need_no_probe_and_are_kept():
    grid, outputs = _grid(3000)
    settings = TileSettings(tile=(256,), halo=16, blend=8)
    assert not needs_receptive_field(grid, outputs, settings, device="cpu")
    plan = plan_tiles(grid, outputs, settings, device="cpu", receptive_field=None)
    assert [(a.block, a.halo, a.blend) for a in plan.axes] == [(256, 16, 8)] * 2


def test_gpu_batches_blocks_and_cpu_does_not():
    grid, outputs = _grid(3000)
    rf = [10, 10]
    assert plan_tiles(grid, outputs, TileSettings(), device="cpu", receptive_field=rf).batch_size == 1
    assert plan_tiles(grid, outputs, TileSettings(), device="cuda:1", receptive_field=rf).batch_size == 4
    unbatchable = plan_tiles(
        grid, outputs, TileSettings(), device="cuda", receptive_field=rf, batchable=False
    )
    assert unbatchable.batch_size == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (TileSettings(tile=(100,)), r"^tile 100: the model takes 64\+16k px along y; use 112$"),
        (TileSettings(tile=(64, 64, 64)), r"^tile takes 1 or 2 sizes for this model, got 3$"),
    ],
)
def test_bad_tiles_are_usage_errors_that_name_the_parameter(settings, message):
    grid, outputs = _grid(3000)
    with pytest.raises(UsageError, match=message) as caught:
        plan_tiles(grid, outputs, settings, device="cpu", receptive_field=None)
    assert caught.value.parameters() == ["tile"]
    assert caught.value.render({"tile": "--tile"}).startswith("--tile")


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: TileSettings(halo=-5), "halo"),
        (lambda: TileSettings(blend=-40), "blend"),
        (lambda: TileSettings(tile=(0,)), "tile"),
        (lambda: TileSettings(batch_size=0), "batch_size"),
        (lambda: DeviceSpec.parse("banana"), "device"),
    ],
)
def test_impossible_settings_are_refused_when_the_record_is_made(make, parameter):
    with pytest.raises(UsageError) as caught:
        make()
    assert caught.value.parameters() == [parameter]


def test_device_spec_keeps_the_index():
    assert DeviceSpec.parse("cuda:1") == DeviceSpec("cuda", 1)
    assert str(DeviceSpec.parse(" CUDA:1 ")) == "cuda:1"
    assert DeviceSpec.parse(None) == DeviceSpec("auto")


# ------------------------------------------------------- output axes that blocks leave whole


def _fixed_model(extra_output_axes, *, size: int = 512, halo: int = 16):
    """A model with a fixed ``size`` x ``size`` input (``raw``) and an output ``prob`` whose y/x follow
    it (with ``halo``), after ``extra_output_axes``."""
    from emzoo.package.spec import Axis, ModelSpec, SizeRef, TensorSpec

    space = [Axis(a, "space", size=size) for a in "yx"]
    raw = TensorSpec("raw", (Axis("batch", "batch"), Axis("channel", "channel", size=1), *space))
    follow = [Axis(a, "space", ref=SizeRef("raw", a), halo=halo) for a in "yx"]
    prob = TensorSpec("prob", (Axis("batch", "batch"), *extra_output_axes, *follow))
    return ModelSpec("fixed", "", "0.5.4", (raw,), (prob,), {})


@pytest.mark.parametrize(
    "extra",
    [
        ("channel", "z"),  # a 2D network's output with a singleton z axis
        ("channel",),
        ("index",),  # an index axis of fixed size instead of channels
    ],
)
def test_output_axes_that_are_not_tiled_pass_through(extra):
    """A fixed 512x512 input, a 600x800 image: tiled with fixed 512 blocks, as bioimageio.core does."""
    from emzoo.package.spec import Axis
    from emzoo.runtime.planning import tile_grid

    axes = {
        "channel": Axis("channel", "channel", size=2, channel_names=("a", "b")),
        "z": Axis("z", "space", size=1),
        "index": Axis("index", "index", size=3),
    }
    spec = _fixed_model([axes[a] for a in extra])
    found = tile_grid(spec, {"raw": (1, 1, 600, 800)})
    assert found is not None
    grid, outputs = found
    n = len(extra) + 1
    assert outputs["prob"].dims == (n, n + 1) and outputs["prob"].halos == (16, 16)
    plan = plan_tiles(grid, outputs, TileSettings(), device="cpu", receptive_field=None)
    assert [a.block for a in plan.axes] == [512, 512] and plan.n_tiles == 4
    assert all(a.halo >= 16 for a in plan.axes)


def test_a_fixed_size_output_axis_along_a_tiled_axis_is_not_tiled():
    from emzoo.package.spec import Axis
    from emzoo.runtime.planning import tile_grid

    spec = _fixed_model([Axis("channel", "channel", size=1)])
    prob = spec.outputs[0]
    fixed_y = [Axis("y", "space", size=512) if a.id == "y" else a for a in prob.axes]
    spec = type(spec)(**{**spec.__dict__, "outputs": (type(prob)(prob.id, tuple(fixed_y)),)})
    assert tile_grid(spec, {"raw": (1, 1, 600, 800)}) is None


def test_small_fixed_blocks_tile_with_a_halo():
    """The pooling alignment guessed for a fixed size (its largest power of two, here 32) is relaxed
    when a block of that size could not hold the halo otherwise."""
    from emzoo.runtime.planning import tile_grid

    spec = _fixed_model([], size=32, halo=4)
    grid, outputs = tile_grid(spec, {"raw": (1, 1, 88, 104)})
    plan = plan_tiles(grid, outputs, TileSettings(), device="cpu", receptive_field=[1, 1])
    assert [a.block for a in plan.axes] == [32, 32] and plan.n_tiles > 4
    assert all(a.halo >= 4 for a in plan.axes)


def test_blending_is_reported_once_per_layout_and_names_an_unknown_receptive_field(caplog):
    """A folder of same-sized images gets the "tiles are blended" warning once, not once per image,
    and an unknown (global) receptive field is said in words, not as ``[None, None] px``."""
    grid, outputs = _grid(2999)  # a size no other test plans, so the warning is new here
    with caplog.at_level("WARNING", logger="emzoo"):
        for _ in range(3):
            plan = plan_tiles(grid, outputs, TileSettings(), device="cpu", receptive_field=[None, None])
    assert plan.n_tiles > 1 and all(a.blend > 0 for a in plan.axes)
    blended = [r.getMessage() for r in caplog.records if "blended" in r.getMessage()]
    assert len(blended) == 1, blended
    assert "unknown receptive field" in blended[0] and "None" not in blended[0]
