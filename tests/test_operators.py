"""Linear operators: pseudo-inverse and adjoint identities, the BCR scale rule, config errors."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from omegaconf import OmegaConf

from singexp.config import CONF_DIR
from singexp.errors import ConfigError
from singexp.operators import (
    OPERATORS,
    AveragePool,
    ColorToGray,
    Identity,
    LinearOperator,
    build_operator,
    scale_for_bcr,
)

OPS = [Identity(), AveragePool(1), AveragePool(2), AveragePool(4), AveragePool(8), ColorToGray()]
SHAPE = (3, 3, 16, 16)


def _rand(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("op", OPS, ids=repr)
def test_pseudo_inverse_identities(op: LinearOperator) -> None:
    x = _rand(SHAPE, 0)
    y = _rand(op.out_shape(SHAPE), 1)
    assert op.A(x).shape == op.out_shape(SHAPE)
    torch.testing.assert_close(op.A(op.A_pinv(op.A(x))), op.A(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(op.A_pinv(op.A(op.A_pinv(y))), op.A_pinv(y), rtol=0, atol=1e-12)
    torch.testing.assert_close(op.A(op.A_pinv(y)), y, rtol=0, atol=1e-12)  # A A† = I
    # A†A is an orthogonal projection: idempotent and self-adjoint
    p = op.project(x)
    torch.testing.assert_close(op.project(p), p, rtol=0, atol=1e-12)
    z = _rand(SHAPE, 2)
    assert torch.allclose((op.project(x) * z).sum(), (x * op.project(z)).sum(), atol=1e-9)


@pytest.mark.parametrize("op", OPS, ids=repr)
def test_adjoint(op: LinearOperator) -> None:
    x = _rand(SHAPE, 3)
    y = _rand(op.out_shape(SHAPE), 4)
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-10)
    # A† = Aᵀ (A Aᵀ)⁻¹ with A Aᵀ = c I: A† y is proportional to Aᵀ y
    ratio = op.A_pinv(y) / op.A_adjoint(y)
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))


def test_operators_by_hand() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = AveragePool(2).A(x)
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    up = AveragePool(2).A_pinv(pooled)
    assert up[0, 0, :2, :2].unique().tolist() == [2.5]
    assert up.shape == x.shape
    rgb = torch.tensor([0.0, 0.3, 0.9]).reshape(1, 3, 1, 1)
    assert torch.allclose(ColorToGray().A(rgb), torch.tensor(0.4))
    assert ColorToGray().A_pinv(torch.ones(2, 1, 4, 4)).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError):
        AveragePool(3).out_shape((1, 3, 16, 16))


@pytest.mark.parametrize(
    ("ratio", "size", "expected"),
    [
        ("1/192", 256, 8),
        ("1/384", 256, 8),
        ("1/768", 256, 16),
        (Fraction(1, 192), 32, 8),
        ("1_384", 32, 8),
        ("1_768", 32, 16),
        ("1/768", 48, 16),
        ("1/768", 24, 12),  # 12 ≤ 19.6 divides 24
        (0.5, 32, 1),
    ],
)
def test_scale_for_bcr(ratio: object, size: int, expected: int) -> None:
    s = scale_for_bcr(ratio, size)
    assert s == expected
    rho = Fraction(str(ratio).replace("_", "/")) if not isinstance(ratio, Fraction) else ratio
    assert 3 * size * size / s**2 >= 2 * rho * 3 * size * size  # A x keeps ≥ 2k reals


def test_build_operator() -> None:
    op = build_operator("avgpool", "auto", "1/192", 32)
    assert isinstance(op, AveragePool) and op.scale == 8
    assert build_operator("avgpool", 4, "1/192", 32).scale == 4
    assert build_operator("avgpool", "2", "1/192", 32).scale == 2
    assert isinstance(build_operator("identity", None, "1/192", 32), Identity)
    assert isinstance(build_operator("gray", None, "1/192", 32), ColorToGray)


@pytest.mark.parametrize(
    ("name", "scale", "key"),
    [
        ("blur", "auto", "operator.name"),
        ("avgpool", 5, "operator.scale"),
        ("avgpool", 64, "operator.scale"),
        ("avgpool", "big", "operator.scale"),
        ("avgpool", 0, "operator.scale"),
        ("avgpool", True, "operator.scale"),
    ],
)
def test_build_operator_errors(name: str, scale: object, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_operator(name, scale, "1/192", 32)
    assert err.value.key == key
    assert "\n" not in str(err.value)


def test_every_operator_config_builds() -> None:
    files = sorted((CONF_DIR / "operator").glob("*.yaml"))
    assert {f.stem for f in files} >= {"avgpool", "identity", "gray"}
    for file in files:
        cfg = OmegaConf.load(file)
        assert cfg.name in OPERATORS
        op = build_operator(cfg.name, cfg.get("scale"), "1/192", 32)
        x = torch.zeros(2, 3, 32, 32)
        assert op.A(x).shape == op.out_shape(x.shape)
