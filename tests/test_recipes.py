import pytest

from ablations.spec.config import RunConfig, check_value, with_overrides
from ablations.spec.errors import InputError
from ablations.spec.recipe import RECIPES_DIR, RecipeError, list_recipes, load_recipe, load_yaml_strict, resolve

SHIPPED = ["paper", "paper-ablation", "probe", "quick"]


def test_shipped_recipes_load_and_every_override_is_valid():
    assert list_recipes() == SHIPPED
    for name in SHIPPED:
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.description and recipe.source
        for key, value in recipe.overrides.items():
            assert check_value(key, value) == value
        for values in recipe.per_model.values():
            for key, value in values.items():
                assert check_value(key, value) == value
        assert isinstance(resolve(recipe), RunConfig)


def test_quick_is_bundled_digits_without_flips():
    config = resolve(load_recipe("quick"))
    assert config.data.dataset == "digits" and config.data.root is None
    assert config.aug.hflip == 0.0
    assert 48 <= config.data.img_size <= 64


def test_paper_ablation_protocol():
    recipe = load_recipe("paper-ablation")
    assert "Section 4" in recipe.source and "check" in recipe.source
    config = resolve(recipe)
    assert (config.optim.name, config.optim.momentum, config.optim.weight_decay) == ("sgd", 0.9, 1e-4)
    assert config.lr == pytest.approx(0.1 * config.train.batch_size / 512)
    # the paper's plain ResNet schedule: step decay x0.1 every 30 epochs after a 5-epoch warm-up (not cosine)
    assert (config.train.epochs, config.sched.warmup_epochs, config.sched.name) == (100, 5, "step")
    assert config.sched.decay_epochs == 30
    # global batch 2048 = 8 GPUs x 256; on one device: 256 per pass, 8 passes accumulated
    assert (config.train.batch_size, config.train.device_batch) == (2048, 256)
    assert config.batch_split() == (1, 256, 8) and config.lr == pytest.approx(0.4)
    assert "leaves open" in recipe.source
    assert (config.data.dataset, config.data.root, config.data.eval_crop_pct) == ("imagefolder", None, 0.875)
    assert config.aug.rand_augment is None and config.aug.mixup == 0 and config.aug.reprob == 0


def test_paper_recipe_drop_path_per_model():
    recipe = load_recipe("paper")
    expected = {"rest_lite": 0.1, "rest_small": 0.1, "rest_base": 0.2, "rest_large": 0.3}
    for model, rate in expected.items():
        assert resolve(recipe, {"model.name": model}).model.drop_path_rate == rate
    assert resolve(recipe).model.drop_path_rate == 0.1  # the recipe's model: rest_lite
    # the caller's overrides come last
    assert resolve(recipe, {"model.name": "rest_base", "model.drop_path_rate": 0.05}).model.drop_path_rate == 0.05
    config = resolve(recipe)
    assert (config.aug.mixup, config.aug.cutmix, config.aug.label_smoothing, config.aug.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert config.aug.rand_augment == "rand-m9-mstd0.5-inc1" and config.optim.clip_grad == 5.0
    assert config.lr == pytest.approx(5e-4 * 2048 / 512)


def test_paper_recipe_is_the_official_v1_script():
    recipe = load_recipe("paper")
    assert "508e30b" in recipe.source and "deviation" in recipe.source.lower()
    config = resolve(recipe)
    assert (config.train.batch_size, config.train.device_batch) == (2048, 256)
    assert config.data.repeated_aug and config.sched.per_epoch
    # main.py scales lr, warmup_lr and min_lr by batch x world / 512
    assert (config.lr, config.warmup_lr, config.min_lr) == pytest.approx((2e-3, 4e-6, 4e-5))
    large = resolve(recipe, {"model.name": "rest_large"})
    assert (large.train.batch_size, large.train.device_batch, large.batch_split()) == (1920, 240, (1, 240, 8))
    assert large.lr == pytest.approx(5e-4 * 1920 / 512)
    eight = resolve(recipe, {"train.devices": 8})
    assert eight.batch_split() == (8, 256, 1) and eight.lr == config.lr


def test_global_batch_arithmetic():
    def split(**train):
        return with_overrides(RunConfig(), {f"train.{k}": v for k, v in train.items()}).batch_split()

    assert split(batch_size=64) == (1, 64, 1)  # no device batch: the global batch in one pass
    assert split(batch_size=64, devices=4) == (4, 16, 1)
    assert split(batch_size=2048, device_batch=256) == (1, 256, 8)
    assert split(batch_size=2048, device_batch=256, devices=2) == (2, 256, 4)
    assert split(batch_size=2048, device_batch=128, devices=8) == (8, 128, 2)
    for bad in (dict(batch_size=64, devices=3), dict(batch_size=2048, device_batch=300),
                dict(batch_size=2048, device_batch=256, devices=16)):
        with pytest.raises(InputError, match="train.batch_size"):
            split(**bad)


def test_resolve_order():
    recipe = load_recipe("quick")
    config = resolve(recipe, {"optim.lr": 0.5, "train": {"epochs": 1}})
    assert config.optim.lr == 0.5 and config.train.epochs == 1
    assert config.train.batch_size == recipe.overrides["train.batch_size"]


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(RecipeError) as err:
        load_recipe("nope")
    for name in SHIPPED:
        assert name in str(err.value)


def write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text("description: d\nsource: s\n" + text)
    return path


@pytest.mark.parametrize("text, key", [
    ("overrides: {}\nextra: 1\n", "extra"),
    ("overrides:\n  optim.lrr: 0.1\n", "optim.lrr"),
    ("overrides:\n  optim.lr: fast\n", "optim.lr"),
    ("overrides:\n  optim.weight_decay: '1e-4'\n", "optim.weight_decay"),
    ("overrides:\n  train.epochs: 2\n  train.epochs: 3\n", "train.epochs"),
    ("overrides:\n  optim.lr: !!python/object/apply:os.system ['true']\n", "optim.lr"),
    ("overrides: {}\nper_model:\n  rest_huge: {model.drop_path_rate: 0.1}\n", "per_model.rest_huge"),
    ("overrides: {}\nper_model:\n  rest_base: {model.drop_path_rate: 2.0}\n", "model.drop_path_rate"),
    ("overrides: [1, 2]\n", "overrides"),
    ("overrides:\n  model.name: rest_tiny\n", "model.name"),
])
def test_bad_recipe_names_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and key in str(err.value)
    assert isinstance(err.value, ValueError)


def test_number_written_as_text_gets_a_hint(tmp_path):
    with pytest.raises(RecipeError, match="with a dot"):
        load_recipe(write(tmp_path, "overrides:\n  optim.weight_decay: '1e-4'\n"))


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 (PyYAML's default) would read 1e-4 as text; the strict loader resolves it as YAML 1.2 does
    recipe = load_recipe(write(tmp_path, "overrides:\n  optim.weight_decay: 1e-4\n  optim.lr: 5e-4\n"))
    assert recipe.overrides == {"optim.weight_decay": 1e-4, "optim.lr": 5e-4}


def test_missing_required_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("description: d\noverrides: {}\n")
    with pytest.raises(RecipeError, match="source"):
        load_recipe(path)


def test_load_yaml_strict_is_shared():
    assert load_yaml_strict(RECIPES_DIR / "quick.yaml")["overrides"]["data.dataset"] == "digits"
