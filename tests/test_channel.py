import math

import pytest
import torch

from singexp.channel import (
    AWGNChannel,
    RayleighChannel,
    SNRSampler,
    build_channel,
    noise_std,
    power_normalize,
    to_complex,
    to_real,
)
from singexp.errors import ConfigError


def test_power_normalisation_gives_unit_average_power_per_image() -> None:
    z = torch.randn(8, 64) * torch.linspace(0.01, 100, 8)[:, None]
    s = power_normalize(to_complex(z))
    power = (s.abs() ** 2).mean(dim=1)
    torch.testing.assert_close(power, torch.ones(8), rtol=1e-5, atol=1e-5)


def test_complex_packing_round_trip() -> None:
    z = torch.randn(3, 4, 2, 2)
    s = to_complex(z)
    assert s.shape == (3, 8) and s.is_complex()
    torch.testing.assert_close(to_real(s, z.shape), z)


def test_odd_number_of_reals_is_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        to_complex(torch.randn(2, 3))


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.0, 20.0])
def test_awgn_noise_variance_matches_snr(snr_db: float) -> None:
    g = torch.Generator().manual_seed(0)
    s = power_normalize(to_complex(torch.randn(64, 4096, generator=g)))
    y = AWGNChannel()(s, torch.full((64,), snr_db), generator=g)
    measured = ((y - s).abs() ** 2).mean().item()
    expected = 10 ** (-snr_db / 10)
    assert measured == pytest.approx(expected, rel=0.02)
    # the noise is circular: half the power in each of the real and imaginary parts
    assert ((y - s).real ** 2).mean().item() == pytest.approx(expected / 2, rel=0.03)


def test_per_image_snr() -> None:
    s = power_normalize(to_complex(torch.randn(2, 20000)))
    y = AWGNChannel()(s, torch.tensor([0.0, 10.0]))
    power = ((y - s).abs() ** 2).mean(dim=1)
    assert power[0].item() == pytest.approx(1.0, rel=0.05)
    assert power[1].item() == pytest.approx(0.1, rel=0.05)


def test_noise_std_formula() -> None:
    assert noise_std(torch.tensor(10.0)).item() == pytest.approx(math.sqrt(0.1 / 2))


def test_channel_is_reproducible_with_generator() -> None:
    s = power_normalize(to_complex(torch.randn(4, 32)))
    snr = torch.zeros(4)
    a = AWGNChannel()(s, snr, generator=torch.Generator().manual_seed(3))
    b = AWGNChannel()(s, snr, generator=torch.Generator().manual_seed(3))
    c = AWGNChannel()(s, snr, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_rayleigh_equalisation_removes_the_fade() -> None:
    h = torch.tensor([[0.3 - 0.4j], [2.0 + 1.0j]])
    s = power_normalize(to_complex(torch.randn(2, 16)))
    torch.testing.assert_close(RayleighChannel.equalize(h * s, h), s)


def test_rayleigh_noise_after_equalisation_scales_with_fade() -> None:
    # at very high SNR the equalised output equals the input; at finite SNR the error
    # power per image is σ²/|h|², larger on average than AWGN's σ² (E[1/|h|²] diverges)
    g = torch.Generator().manual_seed(1)
    s = power_normalize(to_complex(torch.randn(512, 256, generator=g)))
    y_clean = RayleighChannel()(s, torch.full((512,), 140.0), generator=g)
    torch.testing.assert_close(y_clean, s, atol=1e-2, rtol=0)
    y = RayleighChannel()(s, torch.full((512,), 10.0), generator=g)
    err = ((y - s).abs() ** 2).mean(dim=1)
    assert err.median().item() > 0.1 * 0.5  # σ² = 0.1 scaled by 1/|h|², median |h|² ≈ 0.69
    assert err.max().item() > 10 * err.median().item()  # deep fades are heavy-tailed


def test_snr_sampler_fixed_and_uniform() -> None:
    fixed = SNRSampler(3.0, 3.0).sample(5, torch.device("cpu"))
    assert torch.all(fixed == 3.0)
    draw = SNRSampler(-5.0, 5.0).sample(
        10000, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    assert draw.min() >= -5 and draw.max() <= 5
    assert draw.mean().item() == pytest.approx(0.0, abs=0.2)


def test_unknown_channel_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"channel\.name"):
        build_channel("rician")
