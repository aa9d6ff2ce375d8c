import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from conftest import requires_gpu, requires_no_gpu
from singexp.cli import check_group_overrides, group_options
from singexp.config import CONF_DIR, validate
from singexp.errors import ConfigError

MakeCfg = Callable[..., DictConfig]


def test_default_config_validates(make_cfg: MakeCfg) -> None:
    v = validate(make_cfg())
    assert v.latent.channels == 8 and v.latent.symbols == 16  # bcr 1/192 at 32 px
    assert v.channel.train_range() == (0.0, 0.0)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("channel.snr_db=abc", "channel.snr_db"),
        ("bcr.ratio=0", "bcr.ratio"),
        ("bcr.ratio=1.5", "bcr.ratio"),
        ("bcr.ratio=0.004", "bcr.ratio"),
        ("jscc.downsample=12", "jscc.downsample"),
        ("jscc.width=wide", "jscc.width"),
        ("channel.train_snr_range=[5,-5]", "channel.train_snr_range"),
        ("dataset.image_size=40", "dataset.image_size"),
        ("jscc.checkpoint=/nonexistent.ckpt", "jscc.checkpoint"),
    ],
)
def test_bad_values_name_their_key(make_cfg: MakeCfg, override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(override))
    assert str(info.value).startswith(f"{key}:")
    assert "\n" not in str(info.value)


def test_unknown_key_in_own_group_is_named(make_cfg: MakeCfg) -> None:
    with pytest.raises(ConfigError, match=r"^channel\.snrdb: unknown key"):
        validate(make_cfg("+channel.snrdb=3"))


def test_training_snr_range(make_cfg: MakeCfg) -> None:
    v = validate(make_cfg("channel.train_snr_range=[-5,5]"))
    assert v.channel.train_range() == (-5.0, 5.0)
    v = validate(make_cfg("channel.train_snr_db=3"))
    assert v.channel.train_range() == (3.0, 3.0)


def test_bcr_by_value(make_cfg: MakeCfg) -> None:
    assert validate(make_cfg("bcr.ratio=1/96")).latent.channels == 16


def test_unknown_group_option_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        check_group_overrides(["dataset=mnist"])
    message = str(info.value)
    assert message.startswith("dataset: unknown option 'mnist'") and "shapes" in message
    check_group_overrides(["dataset=shapes,photos", "channel.snr_db=3", "+experiment=jscc"])
    with pytest.raises(ConfigError, match="experiment"):
        check_group_overrides(["+experiment=nope"])
    with pytest.raises(ConfigError, match=r"bcr\.ratio=1/768"):  # a ratio by value: the key
        check_group_overrides(["bcr=1/768"])
    # the sweep values quoted by hand, as the shell passes bcr="'1_768','1_384'" (paper_grid)
    check_group_overrides(["bcr='1_768','1_384','1_192'"])
    with pytest.raises(ConfigError, match=r"bcr: unknown option '1_7'"):
        check_group_overrides(["bcr='1_768','1_7'"])


def _own_values(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value an option file sets itself: not its defaults list
    and not interpolations (those resolve against the rest of the config)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if path or key != "defaults":
                yield from _own_values(value, f"{path}.{key}" if path else str(key))
    elif not (isinstance(node, str) and "${" in node):
        yield path, node


def test_every_option_of_every_group_composes_to_its_file(make_cfg: MakeCfg) -> None:
    for group in ["dataset", "channel", "bcr", "jscc", "trainer", "logger", "callbacks", "metrics"]:
        composed = {}
        for option in group_options(group):
            node = make_cfg(f"{group}={option}").get(group)
            got = {} if node is None else OmegaConf.to_container(node, resolve=False)
            composed[option] = json.dumps(got, sort_keys=True)
            own = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
            values = dict(_own_values(own))
            if not own:  # an empty option (logger=none, callbacks=none) selects nothing
                assert not got, (group, option)
            assert values or not own or "defaults" in own, (group, option)
            for key, value in values.items():
                assert OmegaConf.select(OmegaConf.create(got), key) == value, (group, option, key)
        # every option of a group composes to a different config
        assert len(set(composed.values())) == len(composed), (group, composed)


@requires_gpu
def test_gpu_trainer_with_a_gpu_validates(make_cfg: MakeCfg) -> None:
    validate(make_cfg("trainer=gpu"))


@requires_no_gpu
def test_gpu_trainer_without_a_gpu_is_a_one_line_error(make_cfg: MakeCfg) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.accelerator.*no CUDA GPU.*trainer=cpu"):
        validate(make_cfg("trainer=gpu"))
    validate(make_cfg("trainer=cpu"))  # and the fix works


def test_sampler_override_that_methods_would_ignore_is_an_error(make_cfg: MakeCfg) -> None:
    def method_configs(cfg: DictConfig) -> dict:
        return validate(cfg).methods

    main_job = make_cfg("+experiment=sing_inn")
    assert list(method_configs(main_job)) == ["sing_zero", "sing_inn"]
    for override in ("sampler=sing_zero", "+sampler.steps=10"):
        with pytest.raises(ConfigError, match=r"sampler.*methods\.sing_zero\.steps=10"):
            method_configs(make_cfg("+experiment=sing_inn", override))
    single = make_cfg("+experiment=sing_zero", "sampler.steps=7")
    assert method_configs(single)["sing_zero"].config.steps == 7
    # every method's keys are checked before anything runs, under the key the user typed
    for override, key in (
        ("methods.sing_inn.steps=0", "methods.sing_inn.steps"),
        ("methods.sing_inn.zeta=abc", "methods.sing_inn.zeta"),
        ("methods.sing_zero.eta=2", "methods.sing_zero.eta"),
    ):
        with pytest.raises(ConfigError) as err:
            method_configs(make_cfg("+experiment=sing_inn", override))
        assert err.value.key == key


def test_overrides_hydra_would_refuse_are_rewritten() -> None:
    from singexp.cli import quote_group_overrides

    assert quote_group_overrides(["bcr=1_768,1_192", "channel.snr_db=1_0"]) == [
        "bcr='1_768','1_192'",
        "channel.snr_db=1_0",  # not a group option: left to Hydra
    ]
    assert quote_group_overrides(["experiment=sing_inn", "+experiment=jscc"]) == [
        "+experiment=sing_inn",
        "+experiment=jscc",
    ]


def test_experiment_without_plus_composes(make_cfg: MakeCfg) -> None:
    assert make_cfg("experiment=sing_inn").task == "restore"


def test_key_typos_are_one_line_with_the_nearest_keys() -> None:
    from singexp.cli import check_override_keys

    cases = {
        "channel.snr=5": r"channel\.snr: is not a config key; did you mean channel\.snr_db\?",
        "methods.sing_inn.stepz=5": r"did you mean methods\.sing_inn\.steps\?",
        "chanel.snr_db=3": r"chanel\.snr_db: .*did you mean channel\?",
    }
    for override, pattern in cases.items():
        with pytest.raises(ConfigError, match=pattern):
            check_override_keys(["+experiment=sing_inn", override])
    # a sweep is checked at its first point; valid commands and appended keys pass
    with pytest.raises(ConfigError, match="seeed"):
        check_override_keys(["+experiment=sing_inn", "channel.snr_db=-5,5", "seeed=1"])
    check_override_keys(["+experiment=sing_inn", "channel.snr_db=-5,5", "bcr='1_768','1_192'"])
    check_override_keys(["+experiment=paper_grid", "+channel.extra=1", "hydra.sweep.dir=x"])
    check_override_keys(["--cfg", "job"])  # not overrides: left to Hydra


def _schemas() -> dict[str, type]:
    from singexp.config import ChannelConfig, JSCCConfig
    from singexp.metrics import MetricsConfig
    from singexp.models.inn import INNConfig

    return {
        "channel": ChannelConfig,
        "jscc": JSCCConfig,
        "inn": INNConfig,
        "metrics": MetricsConfig,
    }


@pytest.mark.parametrize("group", ["channel", "jscc", "inn", "metrics"])
def test_every_option_file_is_read_by_its_schema(make_cfg: MakeCfg, group: str) -> None:
    """One config mechanism: every option of singexp's own groups is exactly its dataclass
    schema (the same keys; what a file sets itself equals the schema's default, or, for an
    option other than the default one, is a valid value); check_schema reads the composed node."""
    import dataclasses

    from singexp.config import check_schema

    schema = _schemas()[group]
    defaults = {f.name: getattr(schema(), f.name) for f in dataclasses.fields(schema)}
    for option in group_options(group):
        own = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
        own.pop("_target_", None)  # the metrics group is also hydra-instantiable
        assert set(own) == set(defaults), (group, option)
        node = make_cfg(f"{group}={option}")[group]
        keys = {k: node[k] for k in node if k != "_target_"}  # instantiation's key, not ours
        parsed = check_schema(group, keys, schema)
        for key, value in _own_values(own):
            if option in ("default", "deepjscc", "awgn"):
                want = defaults[key]
                assert value == (list(want) if isinstance(want, tuple) else want), (option, key)
            assert getattr(parsed, key) == pytest.approx(value), (option, key)


def test_check_schema_reads_tuples_lists_and_mappings() -> None:
    from dataclasses import dataclass, field

    from singexp.config import check_schema

    @dataclass
    class Schema:
        pair: tuple[float, float] = (0.0, 1.0)
        many: tuple[int, ...] | None = None
        items: list[float] = field(default_factory=list)

    got = check_schema("g", {"pair": [1, 2], "many": [3, 4, 5], "items": (6,)}, Schema)
    assert got == Schema(pair=(1.0, 2.0), many=(3, 4, 5), items=[6.0])
    assert check_schema("g", OmegaConf.create({"many": None}), Schema) == Schema()
    for node, key in (
        ({"pair": [1]}, "g.pair"),
        ({"pair": 1}, "g.pair"),
        ({"many": [1.5]}, "g.many[0]"),
        ({"items": ["x"]}, "g.items[0]"),
        ({"other": 1}, "g.other"),
    ):
        with pytest.raises(ConfigError) as info:
            check_schema("g", node, Schema)
        assert info.value.key == key
    with pytest.raises(ConfigError, match=r"^g: expected a config group"):
        check_schema("g", [1], Schema)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # inn.scale's resolver fails: its own one-line error names operator.scale
        ("operator.scale=3", r"^operator\.scale: 3 does not divide the image size 32"),
        # an interpolation to a missing key: the key holding it, with OmegaConf's reason
        ("+evaluate.extra=${nowhere}", r"^evaluate\.extra: cannot resolve '\$\{nowhere\}': "),
    ],
)
def test_interpolation_errors_name_the_key_at_validation(
    make_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        validate(make_cfg("+experiment=sing_inn", override))
    assert "\n" not in str(error.value)


def test_dataset_options_are_validated(make_cfg: Callable[..., DictConfig]) -> None:
    for override, key in [
        ("dataset.batch_size=abc", "dataset.batch_size"),
        ("dataset.batch_size=0", "dataset.batch_size"),
        ("dataset.test_size=0", "dataset.test_size"),
        ("dataset.num_workers=-1", "dataset.num_workers"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{key}: "):
            validate(make_cfg(override))
    validate(make_cfg("dataset.test_size=null"))  # null: all the split's images


def test_evaluate_split_and_compute_are_checked_once_into_runconfig(
    make_cfg: Callable[..., DictConfig],
) -> None:
    from singexp.samplers.compute import ComputeConfig

    run = validate(make_cfg("+experiment=sing_zero", "evaluate.split=val", "evaluate.compile=true"))
    assert run.evaluate_split == "val"
    assert run.compute == ComputeConfig(compile=True)
    with pytest.raises(ConfigError, match=r"^evaluate\.split: "):
        validate(make_cfg("evaluate.split=train"))  # at validation, before any preflight
    with pytest.raises(ConfigError, match=r"^evaluate\.precision: "):
        validate(make_cfg("evaluate.precision=fp64"))


# ---- every group typed, checked once ---------------------------------------------
def test_prior_operator_and_dataset_groups_are_typed_and_frozen(
    make_cfg: Callable[..., DictConfig],
) -> None:
    import dataclasses

    from singexp.config import DatasetConfig
    from singexp.models.prior import PriorConfig
    from singexp.operators import OperatorConfig

    run = validate(make_cfg("+experiment=sing_inn", "operator=avgpool_s4"))
    assert isinstance(run.prior, PriorConfig) and run.prior.block_out_channels == [32, 64, 128]
    assert isinstance(run.operator, OperatorConfig) and run.operator.scale == 4
    assert isinstance(run.dataset, DatasetConfig) and run.data.test_size == 64
    for group, key in ((run.prior, "source"), (run.operator, "name"), (run.data, "name")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(group, key, "x")
    # a pretrained model's preset has no training keys: None, not a default
    hub = validate(make_cfg("+experiment=sing_inn", "prior=ddpm_cifar10_32"))
    assert hub.prior is not None and hub.prior.lr is None and hub.prior.in_channels == 3


def test_prior_schema_restates_no_yaml_value() -> None:
    """Defaults only in the YAML: PriorConfig's only defaults are None, for the training keys a
    pretrained model's preset leaves out."""
    import dataclasses

    from singexp.models.prior import TRAINING_KEYS, PriorConfig

    defaults = {
        f.name: f.default
        for f in dataclasses.fields(PriorConfig)
        if f.default is not dataclasses.MISSING
    }
    assert set(defaults) == set(TRAINING_KEYS) and set(defaults.values()) == {None}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        (["prior.in_channels=abc"], "prior.in_channels"),
        (["prior=ddpm_cifar10_32", "prior.source=auto"], "prior.block_out_channels"),
        (["operator.name=nope"], "operator.name"),
        (["+operator.sigma=1"], "operator.sigma"),
        (["operator.scale=-2"], "operator.scale"),
        (["dataset.test_size=0"], "dataset.test_size"),
    ],
)
def test_typed_groups_fail_in_one_line_naming_the_key(
    make_cfg: Callable[..., DictConfig], override: list[str], key: str
) -> None:
    with pytest.raises(ConfigError) as error:
        validate(make_cfg("+experiment=sing_inn", *override))
    assert str(error.value).startswith(f"{key}:"), str(error.value)
    assert "\n" not in str(error.value)


def test_the_evaluate_group_is_typed(make_cfg: Callable[..., DictConfig]) -> None:
    from singexp.config import EvaluateConfig

    run = validate(make_cfg("+experiment=comparison", "evaluate.images=4"))
    assert run.evaluate == EvaluateConfig(
        split="test", images=4, paired_reference="sing_inn", grid_images=8
    )
    for override, key in (
        ("evaluate.images=0", "evaluate.images"),
        ("evaluate.grid_images=x", "evaluate.grid_images"),
    ):
        with pytest.raises(ConfigError, match=rf"^{key}:"):
            validate(make_cfg("+experiment=sing_inn", override))
