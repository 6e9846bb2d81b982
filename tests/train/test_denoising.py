"""The ``denoising`` use case (Noise2Void): blind-spot masking, the masked loss, the split, the
evaluation against clean images (synthetic data always; the real data when ../shared/data is there)."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.errors import InputError, UsageError
from emzoo.train.discovery import get_usecase
from emzoo.train.params import load_param_file, resolve_params
from tests.conftest import shared
from tests.train.usecases import sibling


@pytest.fixture(scope="module")
def uc():
    return get_usecase("denoising")


@pytest.fixture(scope="module")
def data(uc):
    return sibling(uc, "data")


@pytest.fixture(scope="module")
def params(uc):
    return resolve_params(load_param_file(uc.params_file), dict(uc.tiny_params))


@pytest.fixture(scope="module")
def tiny(uc, tmp_path_factory):
    return uc.make_tiny_data(tmp_path_factory.mktemp("noisy"))


def test_blind_spots_take_a_neighbours_value(data):
    rng = np.random.default_rng(0)
    patch = rng.normal(size=(40, 50)).astype(np.float32)  # all values distinct
    masked, mask = data.blind_spot(patch, 0.05, 2, rng)
    ys, xs = np.nonzero(mask)
    assert len(ys) == 100 and mask.dtype == patch.dtype
    assert np.array_equal(masked[mask == 0], patch[mask == 0])
    for y, x in zip(ys, xs, strict=True):
        assert masked[y, x] != patch[y, x]
        window = patch[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
        assert masked[y, x] in window  # a pixel at most 2 px away (mirrored at the border)


def test_noise_estimate(uc):
    baseline = sibling(uc, "baseline")
    rng = np.random.default_rng(1)
    smooth = np.add.outer(np.linspace(0, 100, 200), np.linspace(0, 50, 300))
    assert baseline.noise_sigma(smooth + rng.normal(0, 7, smooth.shape)) == pytest.approx(7, rel=0.05)


def test_structured_blind_spots_hide_the_correlated_neighbours(data):
    rng = np.random.default_rng(0)
    patch = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)  # all values distinct
    masked, mask = data.blind_spot(patch, 0.01, 2, rng, structure="x", span=2)
    ys, xs = np.nonzero(mask)
    assert len(ys) == 20  # the loss still sees only the hidden pixels
    changed = masked != patch
    for y, x in zip(ys, xs, strict=True):
        row = changed[y, max(x - 2, 0) : x + 3]
        assert row.sum() >= len(row) - 1  # the pixel and its row neighbours within 2 px are replaced
    assert changed.sum() <= 20 * 5  # nothing else
    assert set(np.nonzero(changed)[0]) <= set(ys.tolist())  # only along the rows: the columns stay
    _, plain_mask = data.blind_spot(patch, 0.01, 2, np.random.default_rng(0))
    assert plain_mask.sum() == mask.sum()
    block, _ = data.blind_spot(patch, 0.002, 2, np.random.default_rng(1), structure="block", span=1)
    assert (block != patch).sum() >= 4 * 9 - 4  # 4 hidden pixels, each with its 3x3 block


def test_structured_masks_are_checked(uc, params):
    from emzoo.errors import UsageError

    with pytest.raises(UsageError, match="mask_structure must be one of none, x, y, xy, block"):
        uc.check_params({**params, "mask_structure": "rows"})
    uc.check_params({**params, "mask_structure": "block", "mask_span": 1})


def test_loss_sees_only_the_masked_pixels(uc):
    import torch

    loss = uc.loss({"method": "n2v", "ne2ne_gamma": 2.0})
    noisy = torch.zeros(2, 1, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2, 3] = 1
    out = torch.full((2, 1, 8, 8), 5.0)
    out[:, :, 2, 3] = 1.0
    assert float(loss(out, torch.cat([noisy, mask], dim=1))) == pytest.approx(1.0)


def test_split_holds_out_a_mosaic_row_and_micrograph_rows(uc, tiny, params):
    split = uc.split(tiny, {**params, "sem_fraction": 0.0})
    assert split["val"] == [
        "noisy_tem/noisy_patches_2x2/1_0.tif",
        "noisy_tem/noisy_patches_2x2/1_1.tif",
        "cryoem_micrographs/tiny.mrc[rows 96-128]",
    ]
    assert "cryoem_micrographs/tiny.mrc[rows 0-96]" in split["train"]
    assert not any(n.startswith("sem_denoising") for n in split["train"] + split["val"])
    assert "sem_denoising/25_sigma/BSE_25sigma_noisy_2.jpg" not in split["test"]  # the tuning draw
    assert len(split["test"]) == 5  # 25 (top level + draw 3), 50, 75, 100


def test_noisy_sem_images_train_above_their_held_out_strips(uc, data, tiny, params):
    params = {**params, "sem_fraction": 0.3}
    split = uc.split(tiny, params)
    sem_train = [n for n in split["train"] if n.startswith("sem_denoising")]
    sem_val = [n for n in split["val"] if n.startswith("sem_denoising")]
    assert len(sem_train) == len(sem_val) == len(split["test"]) == 5  # every scored noisy image
    assert "sem_denoising/BSE_25sigma_noisy.jpg[rows 0-56]" in sem_train  # 64 rows, 8 held out
    assert "sem_denoising/BSE_25sigma_noisy.jpg[rows 56-64]" in sem_val
    assert not any(data.CLEAN in n for n in split["train"] + split["val"])  # never the clean image
    pools, val = data.load(tiny, params)
    assert [s.rows for s in pools["sem"]] == [(0, 56)] * 5
    assert len(val) == 3 + 5
    weights = data.pool_weights(pools, params)
    assert weights == pytest.approx({"tem": 0.4, "cryo": 0.3, "sem": 0.3})
    assert data.pool_weights(pools, {**params, "sem_fraction": 0.0})["sem"] == 0.0


def test_micrographs_with_correlated_noise_are_left_out(uc, data, tiny, params, tmp_path):
    import shutil

    import mrcfile
    from scipy import ndimage

    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    noise = np.random.default_rng(0).normal(1000, 50, (128, 128))
    with mrcfile.new(copy / data.CRYO_DIR / "binned.mrc") as mrc:
        mrc.set_data(ndimage.uniform_filter(noise, 2).astype(np.float32))  # interpolated: correlated
    kept, left_out = data.usable_micrographs(copy, params)
    assert kept == ["cryoem_micrographs/tiny.mrc"] and list(left_out) == ["cryoem_micrographs/binned.mrc"]
    assert left_out["cryoem_micrographs/binned.mrc"] > 0.3
    assert data.neighbour_correlation(noise) == pytest.approx(0, abs=0.03)
    assert not any("binned" in n for n in uc.split(copy, params)["train"])


def test_duplicates_are_scored_once(data, tiny, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    top = copy / data.SEM_DIR / "BSE_25sigma_noisy.jpg"
    (copy / data.SEM_DIR / "25_sigma" / "BSE_25sigma_noisy.jpg").write_bytes(top.read_bytes())
    assert len(data.sem_files(copy)["25"]) == 2


def test_datasets_mask_pieces_and_validate_on_fixed_masks(uc, data, tiny, params):
    params = {**params, "sem_fraction": 0.0}  # the TEM tiles and the micrograph strip validate
    sets = uc.datasets(tiny, params)
    x, y = sets["train"][0]
    assert x.shape == (1, 32, 32) and y.shape == (2, 32, 32)
    assert float(y[1].sum()) == round(params["mask_fraction"] * 32 * 32)
    assert np.array_equal(x.numpy(), sets["train"][0][0].numpy())
    val = sets["val"]
    masks = data.val_masks(3 * 32 * 32, params["mask_fraction"])  # 3 pieces, each with several masks
    assert len(val) == 3 * masks and np.array_equal(
        val[0][1].numpy(), uc.datasets(tiny, params)["val"][0][1].numpy()
    )
    assert not np.array_equal(val[0][1][1].numpy(), val[3][1][1].numpy())  # the same piece, another mask
    metrics = uc.metrics(val[0][1][:1].numpy(), val[0][1].numpy())
    assert metrics == {"masked_mse": 0.0, "unmasked_mse": 0.0}


def test_check_data_names_what_is_missing(uc, tiny, tmp_path):
    uc.check_data(tiny)
    uc.check_data(tiny / "noisy_tem")  # a sub-folder finds its parent
    with pytest.raises(UsageError, match="holds no image that emzoo reads"):
        uc.check_data(tmp_path)  # a plain folder of images (emzoo.io's message when it holds none)
    (tmp_path / "noisy_tem").mkdir()
    (tmp_path / "noisy_tem" / "a.tif").write_bytes(
        (tiny / "noisy_tem" / "noisy_patches_2x2" / "0_0.tif").read_bytes()
    )
    with pytest.raises(InputError, match=r"no clean reference BSE\.jpg"):
        uc.check_data(tmp_path)


def test_evaluate_an_identity_model_scores_like_the_noisy_input(uc, data, tiny, params):
    """A 'denoiser' that returns its input (grey levels in, grey levels out): the noisy image."""

    def predict(image):
        return {"denoised": np.asarray(image, np.float32)}

    result = uc.evaluate(predict, tiny, params)
    noisy = result["other_baselines"]["noisy input (no denoising)"]
    assert result["sample_count"] == 5 and result["dataset_role"] == "train"  # sem_fraction > 0
    assert uc.evaluate(predict, tiny, {**params, "sem_fraction": 0.0})["dataset_role"] == "independent"
    assert set(result["metrics"]) == {f"{m}_s{s}" for m in ("psnr", "ssim") for s in (25, 50, 75, 100)} | {
        "psnr_mean",
        "ssim_mean",
    }
    for key, value in result["metrics"].items():
        assert value == pytest.approx(noisy[key], abs=1e-3), key
    assert result["metrics"]["psnr_s25"] > result["metrics"]["psnr_s100"]
    assert result["baseline"]["metrics"]["psnr_s50"] > noisy["psnr_s50"]  # NLM denoises
    assert "BSE_25sigma_noisy_2.jpg" in result["baseline_settings"]["nlm"]
    assert "| this model (N2V) |" in result["table"]
    assert all(len(k) <= 16 for k in result["metrics"])


# -- the real data --------------------------------------------------------------------------------------


def test_split_of_the_shared_data(uc):
    root = shared("noisy_tem").parent
    params = {
        "val_rows": 512,
        "max_noise_correlation": 0.3,
        "sem_fraction": 0.3,
        "val_fraction": 0.1,
        "depth": 3,
    }
    split = uc.split(root, params)
    tiles = [n for n in split["val"] if n.startswith("noisy_tem")]
    assert tiles == [f"noisy_tem/noisy_patches_7x7/6_{c}.tif" for c in range(7)]
    # epu2.9_example.mrc has interpolated (neighbour-correlated, 0.58) noise and is left out
    assert len(split["train"]) == 56 - 7 + 1 + 12  # and the 12 scored noisy SEM images above their strips
    assert "cryoem_micrographs/fei-extended.mrc[rows 3326-3838]" in split["val"]
    assert "sem_denoising/BSE_50sigma_noisy.jpg[rows 0-643]" in split["train"]  # 714 rows, 71 held out
    assert not any("epu2.9" in n for n in split["train"] + split["val"])
    counts = {lv: sum(f"BSE_{lv}sigma" in n for n in split["test"]) for lv in (25, 50, 75, 100)}
    assert counts == {25: 9, 50: 1, 75: 1, 100: 1}
