"""What reaches the generator: the source crop at the generator's size (not the encoder's
image upsampled) and the mask file's mask (not a threshold), on photos larger than
image_size whose objects are partly black; and the bad inputs of that path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eibacl.config import ConfigError, GenerateRunConfig
from eibacl.data.resize import resize_uint8
from eibacl.data.training_data import prepare_data
from eibacl.generate.dafusion.generator_inputs import dilate, load_generator_inputs, threshold_masks
from tests import tiny

CLASSES = ("ring", "bolt", "gear", "hose")  # 'hose' is held out
W, H = 64, 48  # photos larger than image_size (16)
TOP, BOTTOM, LEFT, RIGHT = 8, 38, 10, 50  # the object's mask: 30 x 40 px
GEN = 32  # the generator's size in these tests (the tiny SD's)


def build_folder(root, empty_mask: str | None = None):
    """4 classes x 3 objects x 2 views; a textured object whose left third is black."""
    rng = np.random.default_rng(0)
    for name in CLASSES:
        for o in range(3):
            for v in range(2):
                image = rng.integers(40, 90, (H, W, 3)).astype(np.uint8)  # background
                image[TOP:BOTTOM, LEFT:RIGHT] = rng.integers(120, 255, (BOTTOM - TOP, 40, 3))
                image[TOP:BOTTOM, LEFT : LEFT + 13] = 0  # a black rubber part of the object
                rel = f"{name}/obj{o}/v{v}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(root / rel)
                mask = np.zeros((H, W), dtype=np.uint8)
                if not (empty_mask and rel.startswith(empty_mask)):
                    mask[TOP:BOTTOM, LEFT:RIGHT] = 255
                (root / "masks" / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(root / "masks" / rel)
    return root


def _config(root, **changes) -> GenerateRunConfig:
    return GenerateRunConfig(
        **(
            tiny.generation(num_synthetic=1, num_near_ood=0, inference_steps=2, strength="0.5")
            | dict(
                data=f"folder:{root}",
                image_size=16,
                ood_classes="hose",
                ood_val_classes="gear",
                shots=2,
                val_per_class=1,
                test_per_class=1,
            )
            | changes
        )
    )


def _by_hand(path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The file's crop and mask resized directly, computed here independently: the mask box
    (40 x 30) grown by 10 % a side (4 and 3 px), masked, padded to 48 x 48, resized once."""
    image = np.asarray(Image.open(path).convert("RGB"))
    top, bottom, left, right = TOP - 3, BOTTOM + 3, LEFT - 4, RIGHT + 4
    mask = np.zeros((H, W), dtype=bool)
    mask[TOP:BOTTOM, LEFT:RIGHT] = True
    crop = (image * mask[..., None])[top:bottom, left:right]  # 36 x 48
    crop_mask = mask[top:bottom, left:right]
    square = np.zeros((48, 48, 3), np.uint8)
    square[6:42] = crop
    square_mask = np.zeros((48, 48), np.uint8)
    square_mask[6:42] = crop_mask
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
    resized_mask = Image.fromarray(square_mask).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized), np.asarray(resized_mask).astype(np.uint8)


def test_the_generator_gets_the_file_crop_at_its_size_and_the_file_mask(tmp_path):
    root = build_folder(tmp_path / "parts")
    data = prepare_data(_config(root))
    inputs = load_generator_inputs(data, GEN, use_masks=True, mask_dilation=0)
    assert inputs.source_px == GEN and inputs.native_px == 48 and inputs.mask_kind == "file"
    assert tuple(inputs.images.shape) == (len(data.train_ids), 3, GEN, GEN)
    upsampled = resize_uint8(data.train_x, GEN)
    for i, image_id in enumerate(data.train_ids):
        image, mask = _by_hand(root / image_id, GEN)
        assert torch.equal(inputs.images[i], torch.from_numpy(image.copy()).permute(2, 0, 1))
        assert torch.equal(inputs.masks[i, 0], torch.from_numpy(mask.copy()))
        assert not torch.equal(inputs.images[i], upsampled[i])  # not the encoder's, blown up
    # the black part of the object is in the mask; a threshold would have dropped it
    black = (inputs.images.amax(dim=1, keepdim=True) == 0) & (inputs.masks == 1)
    assert black.sum() > 50
    assert not torch.equal(threshold_masks(inputs.images), inputs.masks)


def test_masks_are_dilated_by_mask_dilation_pixels(tmp_path):
    root = build_folder(tmp_path / "parts")
    data = prepare_data(_config(root))
    plain = load_generator_inputs(data, GEN, use_masks=True, mask_dilation=0).masks
    grown = load_generator_inputs(data, GEN, use_masks=True, mask_dilation=2).masks
    rows, cols = torch.nonzero(plain[0, 0], as_tuple=True)
    expected = torch.zeros(GEN, GEN, dtype=torch.uint8)
    expected[
        max(0, int(rows.min()) - 2) : int(rows.max()) + 3,
        max(0, int(cols.min()) - 2) : int(cols.max()) + 3,
    ] = 1  # a rectangle grows into a rectangle 2 px wider on every side (clipped)
    assert torch.equal(grown[0, 0], expected)
    assert torch.equal(dilate(plain, 0), plain)
    off = load_generator_inputs(data, GEN, use_masks=False, mask_dilation=2)
    assert off.masks is None and off.mask_kind == "none"


def test_fashion_mnist_is_its_28_px_image_resized_directly():
    from eibacl.data.sources import load_source
    from eibacl.paths import cache_dir

    data = prepare_data(GenerateRunConfig(**tiny.data(shots=2, image_size=16)))
    inputs = load_generator_inputs(data, GEN, use_masks=True, mask_dilation=0)
    native = load_source("fashion-mnist", 28, cache_dir())
    rows = [native.index_of()[i] for i in data.train_ids]
    assert inputs.native_px == 28 and inputs.mask_kind == "threshold"
    assert torch.equal(inputs.images, resize_uint8(native.images[rows], GEN))
    assert torch.equal(inputs.masks, threshold_masks(inputs.images))


def test_an_empty_mask_is_refused_naming_the_file(tmp_path):
    root = build_folder(tmp_path / "parts", empty_mask="ring/")  # every ring mask is empty
    data = prepare_data(_config(root))
    with pytest.raises(ValueError, match=r"mask .*ring/obj\d/v\d.png is empty after cropping"):
        load_generator_inputs(data, GEN, use_masks=True, mask_dilation=0)


def test_ti_vectors_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match=r"ti_vectors=0 is invalid.*-P ti_vectors=1"):
        GenerateRunConfig(ti_vectors=0)


def test_masks_with_a_plain_unet_stop_before_any_training(tmp_path, tiny_sd_dir):
    from eibacl.generate.pipeline import ensure_synthetic_set, generator_dir

    root = build_folder(tmp_path / "parts")
    config = _config(root, generator="stable-diffusion", sd_model=str(tiny_sd_dir), ti_steps=1)
    data = prepare_data(config)
    with pytest.raises(ValueError, match=r"4-channel UNet.*-P use_masks=false"):
        ensure_synthetic_set(config, data, torch.device("cpu"), progress=False)
    assert not generator_dir(config, data).exists()  # nothing trained, nothing lost


def test_what_reaches_stable_diffusion_and_what_comes_back(tmp_path, tiny_sd_inpaint_dir):
    from eibacl.generate.backends.stable_diffusion import StableDiffusionBackend
    from eibacl.generate.dafusion.synthetic_set import SyntheticSet
    from eibacl.generate.pipeline import ensure_synthetic_set

    root = build_folder(tmp_path / "parts")
    config = _config(
        root,
        generator="stable-diffusion",
        sd_model=str(tiny_sd_inpaint_dir),
        ti_steps=1,
        mask_dilation=0,
    )
    data = prepare_data(config)
    seen: dict[str, list] = {"fit": [], "img2img": []}
    fit, img2img = StableDiffusionBackend.fit, StableDiffusionBackend.img2img

    def spy_fit(self, images, labels, names, **kw):
        seen["fit"].append((images.clone(), kw.get("masks")))
        return fit(self, images, labels, names, **kw)

    def spy_img2img(self, images, weights, strength, **kw):
        seen["img2img"].append((images.clone(), kw.get("masks")))
        return img2img(self, images, weights, strength, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(StableDiffusionBackend, "fit", spy_fit)
    mp.setattr(StableDiffusionBackend, "img2img", spy_img2img)
    try:
        result = ensure_synthetic_set(config, data, torch.device("cpu"), progress=False)
    finally:
        mp.undo()
    expected = [_by_hand(root / image_id, GEN) for image_id in data.train_ids]
    images = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im, _ in expected])
    masks = torch.stack([torch.from_numpy(m)[None] for _, m in expected])
    ((fit_images, fit_masks),) = seen["fit"]
    assert torch.equal(fit_images, images) and torch.equal(fit_masks, masks)
    given = torch.cat([im for im, _ in seen["img2img"]])
    given_masks = torch.cat([m for _, m in seen["img2img"]])
    assert torch.equal(given, images) and torch.equal(given_masks, masks)  # 1 variant each
    synthetic = SyntheticSet.open(result.set_dir)
    assert synthetic.images.shape[1:] == (3, 16, 16)  # brought back to image_size
    assert result.generator_metrics()["generator/source_px"] == GEN
    assert result.generator_metrics()["ti/steps"] == 1
