import dataclasses

import pytest

from eibacl.config import (
    BaselineConfig,
    ConfigError,
    DataConfig,
    GenerateRunConfig,
    PretrainConfig,
    ProbeConfig,
    replace,
    strength_list,
    to_dict,
)


@pytest.mark.parametrize("cls", [PretrainConfig, BaselineConfig, ProbeConfig, GenerateRunConfig])
def test_defaults_build_and_are_valid(cls):
    config = cls()
    assert to_dict(config)  # every field is a plain value


def test_defaults_match_the_design():
    config = PretrainConfig()
    assert config.data == "fashion-mnist"
    assert config.ood_classes == "Pullover,Shirt,Ankle boot"
    assert config.temperature > 0
    assert strength_list(config.strength) == [0.25, 0.5, 0.75]


@pytest.mark.parametrize(
    "param,value",
    [
        ("temperature", 0.0),
        ("temperature", -0.1),
        ("epochs", 0),
        ("checkpoint_every", 0),
        ("checkpoint_every", -3),
        ("system_metrics", "yes"),
        ("batch_size", 1),
        ("alpha", -0.01),
        ("alpha", 1.5),
        ("strength", "0"),
        ("strength", "0.5,1.2"),
        ("strength", "-0.25"),
        ("strength", "abc"),
        ("strength", "0.5,high"),
        ("strength", ""),
        ("synthetic", "positive"),
        ("synthetic", "everything"),
        ("num_synthetic", -1),
        ("shots", 0),
        ("image_size", 4),
        ("test_fraction", 1.0),
        ("device", "tpu"),
        ("generator", "gan"),
        ("near_ood_recipes", "class-mix,blend"),
        ("near_ood_recipes", "away@1.5"),
        ("extrapolate_factor", 0.0),
        ("extrapolate_factor", 5.5),
        ("extrapolate_factor", float("inf")),
        ("crop_scale", 0.0),
        ("crop_scale", 1.2),
    ],
)
def test_invalid_value_raises_config_error_naming_the_parameter(param, value):
    with pytest.raises(ConfigError) as info:
        PretrainConfig(**{param: value})
    assert param in str(info.value)
    # `replace` re-validates too.
    with pytest.raises(ConfigError, match=param):
        replace(PretrainConfig(), **{param: value})


@pytest.mark.parametrize(
    "param,value",
    [
        ("alpha", 0.0),
        ("alpha", 1.0),
        ("strength", "1.0"),
        ("strength", "0.1, 0.9"),
        ("synthetic", "none"),
        ("synthetic", "positives"),
        ("num_synthetic", 0),
        ("batch_size", 2),
        ("epochs", 1),
        ("temperature", 0.07),
    ],
)
def test_boundary_values_are_accepted(param, value):
    assert getattr(PretrainConfig(**{param: value}), param) == value


def test_baseline_and_generate_configs_validate_their_groups():
    with pytest.raises(ConfigError, match="alpha"):
        BaselineConfig(alpha=2.0)
    with pytest.raises(ConfigError, match="strength"):
        GenerateRunConfig(strength="1.5")
    with pytest.raises(ConfigError, match="knn_k"):
        ProbeConfig(knn_k=0)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_every_parameter_has_help_text():
    for cls in (PretrainConfig, BaselineConfig, ProbeConfig, GenerateRunConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_data_config_alone_is_not_validated_until_asked():
    config = DataConfig(shots=0)
    with pytest.raises(ConfigError, match="shots"):
        config.validate()


@pytest.mark.parametrize("config_cls", [GenerateRunConfig, PretrainConfig])
def test_an_unknown_near_ood_recipe_names_the_parameter(config_cls):
    with pytest.raises(ConfigError, match=r"near_ood_recipes='foo' is invalid: .*class-mix"):
        config_cls(near_ood_recipes="foo")


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_away_needs_guidance_past_one(scale):
    with pytest.raises(ConfigError, match="guidance_scale.*away"):
        PretrainConfig(near_ood_recipes="class-mix,away", guidance_scale=scale)
    PretrainConfig(near_ood_recipes="class-mix", guidance_scale=scale)  # fine without away


def test_volatile_parameters_are_marked_once_and_leave_the_reuse_key_alone():
    """progress/device/resume/register/checkpoint_every/system_metrics/workers/max_minutes
    change how a run computes, not what: marked on the field, they are what the reuse digest
    ignores; every other parameter changes it."""
    from eibacl import tracking
    from eibacl.config import VOLATILE_PARAMS, ProbeConfig, volatile_fields

    assert set(volatile_fields(PretrainConfig)) == {
        "device",
        "progress",
        "resume",
        "checkpoint_every",
        "system_metrics",
    }
    assert set(volatile_fields(ProbeConfig)) == {"device", "register"}
    assert set(VOLATILE_PARAMS) == {
        "device",
        "progress",
        "resume",
        "register",
        "checkpoint_every",
        "system_metrics",
        "workers",
        "max_minutes",  # the prior's time budget: its training resumes across budgets
    }
    params = dataclasses.asdict(PretrainConfig())
    digest = tracking.params_digest(params, code="git:x")
    changes = (
        ("progress", False),
        ("device", "cuda"),
        ("resume", "abc"),
        ("checkpoint_every", 1),
        ("system_metrics", "true"),
    )
    for name, value in changes:
        assert tracking.params_digest(params | {name: value}, code="git:x") == digest, name
    assert tracking.params_digest(params | {"epochs": 7}, code="git:x") != digest


@pytest.mark.parametrize(
    ("mode", "ignored", "read"),
    [
        ("none", ["alpha", "strength", "synthetic_filter", "feature_noise", "oe_weight"], []),
        ("features", ["alpha", "strength", "near_ood_per_batch"], ["feature_noise", "oe_weight"]),
        ("positives", ["near_ood_per_batch", "feature_noise", "oe_weight"], ["alpha", "strength"]),
        (
            "positives+negatives",
            ["feature_noise"],
            ["alpha", "near_ood_per_batch", "synthetic_filter", "oversample", "num_near_ood"],
        ),
    ],
)
def test_reuse_key_ignores_exactly_the_settings_a_mode_never_reads(mode, ignored, read):
    """A compare that changes only alpha (say) must reuse its `none` cells, and must not
    reuse a `positives` cell trained with another alpha."""
    from eibacl import tracking
    from eibacl.config import unused_settings

    params = dataclasses.asdict(PretrainConfig(synthetic=mode))
    digest = tracking.params_digest(params, code="git:x")
    changed = {
        "alpha": 0.25,
        "strength": "0.5",
        "synthetic_filter": "judge",
        "oversample": 2,
        "feature_noise": 0.3,
        "oe_weight": 0.9,
        "near_ood_per_batch": 8,
        "num_near_ood": 5,
    }
    for name in ignored + read:
        same = tracking.params_digest(params | {name: changed[name]}, code="git:x") == digest
        assert same == (name in ignored), name
    assert set(ignored) <= unused_settings(params)
    assert not set(read) & unused_settings(params)
    assert tracking.params_digest(params | {"temperature": 0.2}, code="git:x") != digest
    assert unused_settings({"strength": "0.5"}) == set()  # generate runs: every setting counts
