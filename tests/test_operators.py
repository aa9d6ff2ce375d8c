"""Linear operators: pseudo-inverse and adjoint identities, the BCR scale rule, config errors."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from omegaconf import OmegaConf

from singexp.config import CONF_DIR
from singexp.errors import ConfigError
from singexp.operators import (
    FITTED,
    OPERATORS,
    AveragePool,
    ColorToGray,
    Identity,
    LinearOperator,
    PatchProjection,
    StridedBlur,
    build_operator,
    fit_patch_projection,
    operator_from_config,
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


def _pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic (x, x̂): x̂ keeps the 4×4 block means of x and replaces the rest by noise."""
    g = torch.Generator().manual_seed(5)
    pool = AveragePool(4)
    x = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    noise = 0.3 * torch.randn(x.shape, generator=g)
    return x, pool.project(x) + noise - pool.project(noise)


def test_every_operator_config_builds() -> None:
    files = sorted((CONF_DIR / "operator").glob("*.yaml"))
    assert {f.stem for f in files} >= {"avgpool", "identity", "gray", "strided_blur", "fitted"}
    for file in files:
        cfg = OmegaConf.load(file)
        assert cfg.name in (*OPERATORS, *FITTED)
        op = operator_from_config(cfg, "1/192", 32, pairs=_pairs)
        x = torch.zeros(2, 3, 32, 32)
        assert op.A(x).shape == op.out_shape(x.shape)


# ---- the operator ablation's operators -------------------------------------------
def _identities(op: LinearOperator, shape: tuple[int, ...], atol: float) -> None:
    """Moore–Penrose conditions A A† A = A, A† A A† = A†, and A†A an orthogonal projection."""
    x = _rand(shape, 10)
    y = _rand(op.out_shape(shape), 11)
    torch.testing.assert_close(op.A(op.A_pinv(op.A(x))), op.A(x), rtol=0, atol=atol)
    torch.testing.assert_close(op.A_pinv(op.A(op.A_pinv(y))), op.A_pinv(y), rtol=0, atol=atol)
    p = op.project(x)
    torch.testing.assert_close(op.project(p), p, rtol=0, atol=atol)
    z = _rand(shape, 12)
    assert torch.allclose((op.project(x) * z).sum(), (x * op.project(z)).sum(), atol=1e-8)
    # Aᵀ is the adjoint: <A x, y> = <x, Aᵀ y>
    assert torch.allclose((op.A(x) * y).sum(), (x * op.A_adjoint(y)).sum(), atol=1e-9)


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_strided_blur_pseudo_inverse(scale: int) -> None:
    op = StridedBlur(scale)
    _identities(op, (2, 3, 32, 32), 1e-10)
    _identities(op, (1, 3, 16, 24), 1e-10)  # non-square, cached per size
    assert op.singular_value is None  # AAᵀ is not a multiple of I


def test_strided_blur_by_hand() -> None:
    # a constant image stays constant (the kernel sums to 1)
    op = StridedBlur(4, sigma=1.5)
    x = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
    torch.testing.assert_close(op.A(x), torch.full((1, 3, 4, 4), 0.3, dtype=torch.float64))
    # blur of a centred impulse, then every 4th pixel: the Gaussian's samples, normalised
    d = torch.exp(
        -(
            torch.arange(0, 16, 4, dtype=torch.float64).minimum(
                16 - torch.arange(0, 16, 4, dtype=torch.float64)
            )
            ** 2
        )
        / (2 * 1.5**2)
    )
    full = torch.arange(16, dtype=torch.float64)
    norm = torch.exp(-(full.minimum(16 - full) ** 2) / (2 * 1.5**2)).sum() ** 2
    impulse = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    impulse[..., 0, 0] = 1
    torch.testing.assert_close(op.A(impulse)[0, 0], d[:, None] * d[None, :] / norm)


def test_patch_projection_general_matrix() -> None:
    m = _rand((5, 12), 20)  # any full-row-rank tile matrix: exact pseudo-inverse by SVD
    op = PatchProjection(m, 2)
    _identities(op, (2, 3, 8, 8), 1e-10)
    assert op.singular_value is None
    assert op.out_shape((2, 3, 8, 8)) == (2, 5, 4, 4)


def test_fitted_operator_pseudo_inverse_and_fit() -> None:
    """The fitted A: A A† A = A and A†A idempotent (1e-5, float32 as in sampling), orthonormal
    rows, and the least-squares optimum over projections on its own pairs."""
    x, x_hat = _pairs(64)
    op = fit_patch_projection(x, x_hat, 4)
    assert op.singular_value == 1.0  # orthonormal rows: A Aᵀ = I, A† = Aᵀ
    torch.testing.assert_close(op.matrix @ op.matrix.T, torch.eye(op.rank, dtype=torch.float64))
    xs = x[:4]
    ax = op.A(xs)
    torch.testing.assert_close(op.A(op.A_pinv(ax)), ax, rtol=0, atol=1e-5)
    torch.testing.assert_close(op.project(op.project(xs)), op.project(xs), rtol=0, atol=1e-5)
    _identities(op, (2, 3, 8, 8), 1e-10)
    # x̂ keeps the block means (one direction per channel of a 4×4 tile) and nothing else: the
    # fit finds them, A ≈ 4×4 average pooling up to a rotation of its rows (up to sampling error)
    assert op.rank == 3
    pooling_rows = torch.eye(3, dtype=torch.float64).repeat_interleave(16, dim=1) / 4  # unit rows
    alignment = torch.linalg.svdvals(op.matrix @ pooling_rows.T)  # cosines of principal angles
    assert bool((alignment > 0.99).all()), alignment
    # the estimate P x̂ + (I − P) μ has the MSE the fit reports, below x̂'s and any other rank's
    # μ: the mean 4×4 tile (the fit is shift invariant over tiles), tiled over the image
    mu = x.reshape(-1, 3, 8, 4, 8, 4).mean(dim=(0, 2, 4)).repeat(1, 8, 8)[None]

    def mse(o: PatchProjection) -> float:
        est = o.project(x_hat.double()) + mu.double() - o.project(mu.double())
        return float((est - x.double()).pow(2).mean())

    assert mse(op) == pytest.approx(op.info["fit_mse"], rel=1e-6)
    assert mse(op) < op.info["received_mse"]
    for rank in (1, op.rank - 1, op.rank + 1, 48):
        assert mse(fit_patch_projection(x, x_hat, 4, rank)) >= mse(op) - 1e-12


@pytest.mark.parametrize(
    ("node", "key"),
    [
        ({"name": "strided_blur", "scale": 4, "sigma": -1}, "operator.sigma"),
        ({"name": "strided_blur", "scale": 3}, "operator.scale"),
        ({"name": "avgpool", "scale": 4, "rank": 3}, "operator.rank"),
        ({"name": "fitted", "scale": 4, "rank": 0}, "operator.rank"),
        ({"name": "fitted", "scale": 4, "rank": "most"}, "operator.rank"),
        ({"name": "fitted", "scale": 4, "fit_images": 0}, "operator.fit_images"),
        ({"name": "fitted", "scale": 4, "sigma": 1}, "operator.sigma"),
    ],
)
def test_operator_config_errors(node: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        operator_from_config(node, "1/192", 32, pairs=_pairs)
    assert err.value.key == key
    assert "\n" not in str(err.value)


def test_fitted_needs_pairs() -> None:
    with pytest.raises(ConfigError, match="pairs"):
        build_operator("fitted", 8, "1/192", 32)
    with pytest.raises(ConfigError, match="pairs"):
        operator_from_config({"name": "fitted", "scale": 8}, "1/192", 32)
