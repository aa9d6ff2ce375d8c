from fractions import Fraction

import pytest

from singexp.bcr import PAPER_RATIOS, latent_shape, parse_ratio
from singexp.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "channels", "symbols_32", "symbols_256"),
    [("1_768", 2, 4, 256), ("1_384", 4, 8, 512), ("1_192", 8, 16, 1024)],
)
def test_paper_ratios_give_the_paper_latent_shapes(
    name: str, channels: int, symbols_32: int, symbols_256: int
) -> None:
    ratio = parse_ratio(name)
    small = latent_shape(ratio, 32, 16)
    large = latent_shape(ratio, 256, 16)
    assert small.channels == large.channels == channels
    assert small.symbols == symbols_32
    assert large.symbols == symbols_256  # paper: system model: k = 256, 512, 1024 at 256×256
    assert Fraction(large.symbols, large.n) == ratio


@pytest.mark.parametrize("text", ["1/192", "0.005208333333", "1_192"])
def test_ratio_spellings(text: str) -> None:
    assert parse_ratio(text) == PAPER_RATIOS["1_192"]


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "abc"])
def test_invalid_ratio_names_the_key(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^bcr\.ratio: "):
        parse_ratio(bad)


def test_ratio_without_whole_channels_names_nearest_valid_ratios() -> None:
    with pytest.raises(ConfigError) as info:
        latent_shape(parse_ratio("0.004"), 32, 16)
    message = str(info.value)
    assert message.startswith("bcr.ratio:")
    assert "1/256" in message and "1/307" not in message  # c = 6.144 → 6 (1/256) or 7 (7/1536)
    assert "7/1536" in message


def test_other_downsampling() -> None:
    shape = latent_shape(Fraction(1, 24), 32, 4)  # c = 6·16/24 = 4
    assert shape.channels == 4 and shape.spatial == 8 and shape.symbols == 128


def test_image_size_must_divide() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.image_size"):
        latent_shape(Fraction(1, 192), 40, 16)


@pytest.mark.parametrize(("k_paper", "name"), [(256, "1_96"), (512, "1_48"), (1024, "1_24")])
def test_embedded_presets_scale_the_papers_symbol_counts_with_the_side(
    k_paper: int, name: str
) -> None:
    # k_32 = k_256 · 32/256 complex symbols for n = 3·32·32 values: ρ = k_32 / n
    from pathlib import Path

    import yaml

    from singexp.bcr import EMBEDDED_RATIOS, scaled_symbol_ratio

    k32 = k_paper * 32 // 256
    expected = Fraction(k32, 3 * 32 * 32)
    assert scaled_symbol_ratio(k_paper, 32) == expected
    assert EMBEDDED_RATIOS[name] == expected
    preset = yaml.safe_load(
        (Path(__file__).parents[1] / "conf" / "bcr" / f"{name}.yaml").read_text()
    )
    assert parse_ratio(preset["ratio"]) == expected and preset["name"] == name
    # at 256 px the scaled ratio gives the paper's own count back: 8× its ratio
    assert scaled_symbol_ratio(k_paper, 256) * 3 * 256 * 256 == k_paper
