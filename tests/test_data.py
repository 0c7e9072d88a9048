import numpy as np
import pytest
import torch
from PIL import Image

from ablations.spec.config import RunConfig, with_overrides
from ablations.spec.recipe import list_recipes, load_recipe
from ablations.training.loaders import (
    ENV_ROOT,
    DatasetError,
    EpochSampler,
    SeededSamples,
    build_datasets,
    build_loaders,
    check_dataset,
    image_transforms,
    load_digits_arrays,
    posterize_keeping,
    resolve_data_root,
    with_zero_bit_posterize,
)


def cfg(**overrides) -> RunConfig:
    base = {"data.img_size": 32}
    base.update({k.replace("__", "."): v for k, v in overrides.items()})
    return with_overrides(RunConfig(), base)


def write_imagefolder(root, classes=("cat", "dog"), train=6, val=3, size=40):
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def test_digits_arrays_are_scikit_learns():
    from sklearn.datasets import load_digits

    images, labels = load_digits_arrays()
    digits = load_digits()
    assert np.array_equal(images, digits.images) and np.array_equal(labels, digits.target)


def test_digits_split_is_fixed_and_stratified():
    train, val, num_classes = build_datasets(cfg())
    assert (len(train), len(val), num_classes) == (1438, 359, 10)
    x, y = val[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= int(y) < 10
    assert torch.equal(x[0], x[2])  # grey replicated to 3 channels
    assert set(np.bincount([int(val[i][1]) for i in range(len(val))])) <= {35, 36, 37}
    # the run seed does not move the split
    _, val_other, _ = build_datasets(cfg(train__seed=7))
    assert all(torch.equal(val[i][0], val_other[i][0]) for i in range(0, 359, 50))


def test_digits_limits_take_the_first_n():
    train, val, _ = build_datasets(cfg(data__train_limit=64, data__val_limit=32))
    full_train, full_val, _ = build_datasets(cfg(aug__scale_min=1.0, aug__hflip=0.0))
    assert (len(train), len(val)) == (64, 32)
    assert torch.equal(val[5][0], full_val[5][0])


def test_digits_without_augmentation_is_the_image_itself():
    train, val, _ = build_datasets(cfg(aug__scale_min=1.0, aug__hflip=0.0))
    x1, _ = train[3]
    x2, _ = train[3]
    assert torch.equal(x1, x2)
    assert train.augment is None


def test_digits_augmentation_is_seeded_per_epoch_and_sample():
    train, _, _ = build_datasets(cfg(aug__scale_min=0.3, aug__reprob=0.5))
    stored = train.images[4].clone()
    seeded = SeededSamples(train, seed=0)
    a, b, c = seeded[(0, 4)][0], seeded[(0, 4)][0], seeded[(1, 4)][0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(train.images[4], stored)  # random erasing did not write into the dataset


def test_digits_rejects_rand_augment():
    with pytest.raises(DatasetError, match="rand_augment"):
        build_datasets(cfg(aug__rand_augment="rand-m9-mstd0.5"))


def test_epoch_sampler_resumes_and_shards():
    sampler = EpochSampler(20, seed=3)
    sampler.set_epoch(0)
    full = [i for _, i in sampler]
    assert sorted(full) == list(range(20))
    sampler.set_epoch(0, skip=8)
    assert [i for _, i in sampler] == full[8:] and len(sampler) == 12
    sampler.set_epoch(1)
    assert [i for _, i in sampler] != full and {e for e, _ in sampler} == {1}
    ranks = [EpochSampler(20, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(2)
    shards = [{i for _, i in s} for s in ranks]
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 10


def test_loaders_drop_the_last_partial_batch():
    train, val, num_classes = build_loaders(cfg(data__train_limit=40, data__val_limit=10, train__batch_size=16))
    assert len(train) == 2 and len(val) == 1 and num_classes == 10
    train.sampler.set_epoch(0)
    x, y = next(iter(train))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,)


def test_imagefolder_missing_root_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_ROOT, raising=False)
    missing = tmp_path / "imagenet"
    with pytest.raises(DatasetError) as err:
        check_dataset(cfg(data__dataset="imagefolder", data__root=str(missing)))
    message = str(err.value)
    assert str(missing) in message and "--data-root" in message and ENV_ROOT in message and "imagefolder" in message
    with pytest.raises(DatasetError, match="data.root is not set"):
        build_datasets(cfg(data__dataset="imagefolder"))
    missing.mkdir()
    with pytest.raises(DatasetError, match="train"):
        check_dataset(cfg(data__dataset="imagefolder", data__root=str(missing)))


def test_rest_data_root_is_honoured(tmp_path, monkeypatch):
    root = write_imagefolder(tmp_path / "data")
    monkeypatch.setenv(ENV_ROOT, str(root))
    config = cfg(data__dataset="imagefolder")
    assert resolve_data_root(config) == str(root)
    check_dataset(config)
    train, val, num_classes = build_datasets(config)
    assert (len(train), len(val), num_classes) == (12, 6, 2)
    assert train[0][0].shape == (3, 32, 32) and val[0][0].shape == (3, 32, 32)
    # data.root wins over the environment; digits needs no root at all
    assert resolve_data_root(cfg(data__dataset="imagefolder", data__root="/elsewhere")) == "/elsewhere"
    assert resolve_data_root(cfg()) is None


def test_imagefolder_limit_takes_a_fixed_mix_of_classes(tmp_path):
    root = write_imagefolder(tmp_path / "data", train=8)
    train, _, _ = build_datasets(cfg(data__dataset="imagefolder", data__root=str(root), data__train_limit=6))
    labels = [int(train[i][1]) for i in range(6)]
    assert len(train) == 6 and set(labels) == {0, 1}


@pytest.mark.parametrize("dataset, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_is_never_downloaded(tmp_path, monkeypatch, dataset, folder):
    monkeypatch.delenv(ENV_ROOT, raising=False)
    config = cfg(data__dataset=dataset, data__root=str(tmp_path))
    for call in (check_dataset, build_datasets):
        with pytest.raises(DatasetError) as err:
            call(config)
        assert str(tmp_path / folder) in str(err.value) and "--data-root" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_empty_class_folder_is_found_when_the_dataset_is_checked(tmp_path):
    root = write_imagefolder(tmp_path / "data", train=1, val=1, size=8)
    (root / "val" / "bird").mkdir()
    (root / "train" / "bird").mkdir()
    (root / "train" / "bird" / "0.png").write_bytes((root / "train" / "cat" / "0.png").read_bytes())
    with pytest.raises(DatasetError, match="val/bird/ holds no image"):
        check_dataset(cfg(data__dataset="imagefolder", data__root=str(root)))


def test_rand_augment_string_is_checked_by_building_it(tmp_path):
    root = write_imagefolder(tmp_path / "data", train=1, val=1, size=8)
    check_dataset(cfg(data__dataset="imagefolder", data__root=str(root), aug__rand_augment="rand-m9-mstd0.5-inc1"))
    with pytest.raises(DatasetError, match="not a valid timm RandAugment"):
        check_dataset(cfg(data__dataset="imagefolder", data__root=str(root), aug__rand_augment="rand-zz9"))


def test_a_corrupt_image_names_its_file(tmp_path):
    root = write_imagefolder(tmp_path / "data", train=2, val=1, size=8)
    bad = root / "train" / "cat" / "1.png"
    bad.write_bytes(bad.read_bytes()[:20])  # a truncated PNG
    from ablations.training.loaders import load_image

    assert load_image(str(root / "train" / "cat" / "0.png")).mode == "RGB"
    with pytest.raises(DatasetError, match=r"cat/1\.png: not a readable image"):
        load_image(str(bad))
    with pytest.raises(DatasetError, match=r"cat/1\.png: not a readable image"):
        train_set = build_datasets(cfg(data__dataset="imagefolder", data__root=str(root)))[0]
        for i in range(len(train_set)):
            train_set[i]


@pytest.mark.parametrize("mode, suffix", [("RGB", "jpg"), ("L", "jpg"), ("P", "png"), ("RGBA", "png"), ("CMYK", "jpg")])
def test_every_image_mode_loads_as_the_rgb_image_pils_convert_gives(tmp_path, mode, suffix):
    from PIL import Image

    from ablations.training.loaders import load_image

    path = tmp_path / f"image.{suffix}"
    pixels = torch.arange(3 * 12 * 10, dtype=torch.uint8).reshape(12, 10, 3).mul_(7).numpy()
    Image.fromarray(pixels).convert(mode).save(path)
    loaded = load_image(str(path))
    with Image.open(path) as expected:
        assert loaded.mode == "RGB" and loaded.tobytes() == expected.convert("RGB").tobytes()


def test_accumulating_sampler_deals_the_passes_of_more_devices():
    """One device accumulating 2 passes of 4 sees, per update, exactly what 2 devices of 4 see."""
    one = EpochSampler(40, seed=5, accum=2, micro_batch=4)
    two = [EpochSampler(40, seed=5, rank=r, world_size=2, micro_batch=4) for r in (0, 1)]
    for s in (one, *two):
        s.set_epoch(1)
    flat, parts = [i for _, i in one], [[i for _, i in s] for s in two]
    assert one.steps == two[0].steps == 5 and len(one) == 40
    for step in range(5):
        assert flat[8 * step:8 * step + 4] == parts[0][4 * step:4 * step + 4]
        assert flat[8 * step + 4:8 * step + 8] == parts[1][4 * step:4 * step + 4]
    one.set_epoch(1, skip=3)  # resuming skips whole updates
    assert [i for _, i in one] == flat[24:]


def test_repeated_augmentation_is_deits_rasampler():
    sampler = EpochSampler(1000, seed=0, world_size=1, accum=4, micro_batch=8, repeated=True)
    sampler.set_epoch(0)
    assert sampler.share() == 1000 // 256 * 256 // 4 == 192 and sampler.steps == 24
    parts = [sampler.indices_of(v) for v in range(4)]
    g = torch.Generator()
    g.manual_seed(0)
    order = torch.randperm(1000, generator=g).tolist()
    first = order[0]  # its 3 copies go to virtual devices 0, 1, 2, each at their first position
    assert [p[0] for p in parts[:3]] == [first] * 3 and parts[3][0] == order[1]
    assert len({i for p in parts for i in p}) < 4 * 192  # repeats: fewer distinct images than samples


def test_the_launch_check_counts_training_images_as_the_loaders_do(tmp_path):
    """ablations.spec.dataset_checks counts without torch what build_datasets / build_loaders then see."""
    from ablations.spec.dataset_checks import train_images, updates_per_epoch
    from ablations.training.probe_dataset import TRAIN_SIZE

    for dataset in ("digits", "probe"):
        config = cfg(data__dataset=dataset, data__img_size=32)
        assert train_images(config) == len(build_datasets(config)[0]) == 1438 == TRAIN_SIZE
    root = write_imagefolder(tmp_path / "data", train=5, val=1, size=8)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    config = cfg(data__dataset="imagefolder", data__root=str(root))
    assert train_images(config) == len(build_datasets(config)[0]) == 10
    assert train_images(config, at_most=4) == 4  # counting stops there
    limited = cfg(data__dataset="imagefolder", data__root=str(root), data__train_limit=7)
    assert train_images(limited) == len(build_datasets(limited)[0]) == 7
    for batch, repeated, expected in ((10, False, 1), (11, False, 0), (4, True, 2)):
        config = cfg(data__dataset="imagefolder", data__root=str(root), train__batch_size=batch,
                     data__repeated_aug=repeated)
        updates = updates_per_epoch(config, 10)
        assert updates == expected, (batch, repeated)
        if updates:
            assert len(build_loaders(config)[0].sampler) // batch == updates
        else:
            with pytest.raises(ValueError, match="fewer than one global batch"):
                build_loaders(config)


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_recipes_training_transform_survives_ten_thousand_images(recipe):
    """The recipe's image-file augmentation (RandAugment included) on 10,000 draws, whatever Pillow is installed:
    with Pillow 13, timm's posterize asks for 0 bits about once in a thousand images and Pillow refuses it."""
    import random

    loaded = load_recipe(recipe)
    config = with_overrides(RunConfig(), {**loaded.overrides, "data.img_size": 32})  # the same ops, small
    train, _ = image_transforms(config)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    random.seed(0)
    torch.manual_seed(0)
    for _ in range(10_000):
        assert train(image).shape == (3, 32, 32)


def test_zero_bits_of_posterize_give_a_black_image_as_pillow_did_before_13():
    from timm.data.auto_augment import AugmentOp

    image = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8))
    assert np.asarray(posterize_keeping(image, 0)).max() == 0
    assert np.array_equal(np.asarray(posterize_keeping(image, 4)), np.full((8, 8, 3), 192))  # keeps 4 high bits
    assert posterize_keeping(image, 8) is image
    op = with_zero_bit_posterize(AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10))  # asks for 0 bits
    assert np.asarray(op(image)).max() == 0


@pytest.mark.parametrize("damage, words", [
    ("empty", "not an image file PIL can identify"),
    ("bomb", "DecompressionBombError"),
])
def test_a_bad_image_read_in_a_loader_worker_fails_the_run_with_one_line_naming_it(tmp_path, monkeypatch, damage,
                                                                                   words):
    from ablations import store
    from ablations.training.trainer import train_run

    root = write_imagefolder(tmp_path / "data", train=4, val=2, size=40)
    bad = root / "train" / "dog" / "1.png"
    if damage == "empty":
        bad.write_bytes(b"")
    else:  # more than twice PIL's pixel limit (lowered here; the worker forks with it): a decompression bomb
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        Image.new("RGB", (100, 100)).save(bad)
    config = cfg(data__dataset="imagefolder", data__root=str(root), data__img_size=32, train__batch_size=8,
                 train__epochs=1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(Exception):  # noqa: B017 - whatever the worker raised, the run records it as one line
        train_run(config, run_dir, progress=False, num_workers=1)
    reason = store.read_error(run_dir)["reason"]
    assert "\n" not in reason and str(bad) in reason and words in reason and "data-loading worker" in reason, reason
    assert "Original Traceback" in store.read_error(run_dir)["traceback"], "the whole traceback is kept"


def test_a_samples_augmentation_is_seeded_on_the_host_alone_with_the_same_draws():
    """SeededSamples seeds torch's CPU generator, numpy and random (not every accelerator's, 20x the cost): a
    sample's augmentation draws exactly what it drew with torch.manual_seed."""
    from ablations.training.loaders import SeededSamples, mix_seed, seed_everything

    train, _, _ = build_datasets(cfg())
    seeded = SeededSamples(train, seed=3)
    assert not torch.equal(seeded[(1, 0)][0], seeded[(2, 0)][0]), "the digits' augmentation draws"
    for index in (0, 7, 100):
        ours = seeded[(2, index)][0]
        seed_everything(mix_seed(3, 2, index))
        assert torch.equal(ours, train[index][0])


def test_image_batches_travel_as_bytes_and_are_normalised_on_the_device_as_timm_normalises_them(tmp_path):
    """The loader's image-file batches are uint8 (a quarter of float32's copy to the GPU); DeviceBatches gives what
    timm's float transforms give (ToTensor + Normalize), and erases (aug.reprob) in training only."""
    from timm.data import create_transform

    from ablations.training.loaders import DeviceBatches

    root = write_imagefolder(tmp_path / "data", train=4, val=2, size=40)
    config = cfg(data__dataset="imagefolder", data__root=str(root), aug__reprob=1.0, train__batch_size=4)
    train_loader, val_loader, _ = build_loaders(config)
    train_loader.sampler.set_epoch(0)
    x, _ = next(iter(train_loader))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 32, 32)
    to_device = DeviceBatches(config, torch.device("cpu"), torch.contiguous_format)
    val_x, _ = next(iter(val_loader))
    reference = create_transform(32, is_training=False, interpolation="bicubic", crop_pct=config.data.eval_crop_pct)
    image = Image.open(sorted((root / "val").rglob("*.png"))[0]).convert("RGB")
    torch.testing.assert_close(to_device(val_x, train=False)[0], reference(image), rtol=0, atol=1e-5)
    erased = to_device(x, train=True)  # probability 1: every sample, whatever the generators give
    assert not torch.allclose(erased, to_device(x, train=False)), "random erasing at probability 1"
