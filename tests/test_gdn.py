"""GDN and IGDN against values computed by hand from Ballé et al.'s formula.

GDN:  y_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²);  IGDN:  y_i = x_i · sqrt(β_i + Σ_j γ_ij x_j²).
β and γ are stored as q with p = max(q, bound)² − 2⁻¹⁸, bound = sqrt(minimum + 2⁻¹⁸).
"""

from __future__ import annotations

import math

import pytest
import torch

from singexp.nn.gdn import GDN, lower_bound

PEDESTAL = 2.0**-18

# two channels, an asymmetric γ (γ_ij: how channel j divides channel i)
BETA = [1.0, 0.5]
GAMMA = [[0.2, 0.1], [0.3, 0.0]]


def _set(gdn: GDN, beta: list[float], gamma: list[list[float]]) -> GDN:
    """Store β and γ through the documented reparametrisation q = sqrt(p + 2⁻¹⁸)."""
    with torch.no_grad():
        gdn.beta.raw.copy_(torch.tensor(beta).add(PEDESTAL).sqrt())
        gdn.gamma.raw.copy_(torch.tensor(gamma).add(PEDESTAL).sqrt())
    return gdn


def _pixels(values: list[tuple[float, float]]) -> torch.Tensor:
    """(1, 2, 1, n): one pixel per (x_1, x_2) pair."""
    return torch.tensor(values).T.reshape(1, 2, 1, len(values))


# (x_1, x_2) and, by hand, the norms n_i = β_i + Σ_j γ_ij x_j²
CASES = [
    # x = (1, 2): n_1 = 1 + 0.2·1 + 0.1·4 = 1.6;  n_2 = 0.5 + 0.3·1 + 0·4 = 0.8
    ((1.0, 2.0), (1.6, 0.8)),
    # x = (−3, 0.5): n_1 = 1 + 0.2·9 + 0.1·0.25 = 2.825;  n_2 = 0.5 + 0.3·9 = 3.2
    ((-3.0, 0.5), (2.825, 3.2)),
    # x = (0, −1): n_1 = 1 + 0.1 = 1.1;  n_2 = 0.5
    ((0.0, -1.0), (1.1, 0.5)),
]


def test_reparametrisation_reproduces_the_given_beta_and_gamma() -> None:
    gdn = _set(GDN(2), BETA, GAMMA)
    torch.testing.assert_close(gdn.beta(), torch.tensor(BETA), atol=1e-6, rtol=0)
    torch.testing.assert_close(gdn.gamma(), torch.tensor(GAMMA), atol=1e-6, rtol=0)
    # raw values below the bound are clamped: β never below beta_min, γ never negative
    with torch.no_grad():
        gdn.beta.raw.fill_(-0.3)
        gdn.gamma.raw.fill_(-0.3)
    torch.testing.assert_close(gdn.beta(), torch.full((2,), 1e-6), atol=1e-9, rtol=0)
    torch.testing.assert_close(gdn.gamma(), torch.zeros(2, 2), atol=1e-9, rtol=0)
    # the initial parameters are β = 1, γ = 0.1·I (Ballé et al.)
    fresh = GDN(3)
    torch.testing.assert_close(fresh.beta(), torch.ones(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(fresh.gamma(), 0.1 * torch.eye(3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_and_igdn_match_the_formula_by_hand(inverse: bool) -> None:
    gdn = _set(GDN(2, inverse=inverse), BETA, GAMMA)
    x = _pixels([xs for xs, _ in CASES])
    expected = []
    for xs, norms in CASES:
        roots = [math.sqrt(n) for n in norms]
        expected.append(tuple(v * r if inverse else v / r for v, r in zip(xs, roots, strict=True)))
    with torch.no_grad():
        torch.testing.assert_close(gdn(x), _pixels(expected), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_matches_the_formula_on_random_parameters(inverse: bool) -> None:
    g = torch.Generator().manual_seed(0)
    c = 4
    beta = (torch.rand(c, generator=g) + 0.1).tolist()
    gamma = torch.rand(c, c, generator=g).tolist()  # dense and asymmetric
    gdn = _set(GDN(c, inverse=inverse), beta, gamma)
    x = torch.randn(2, c, 3, 5, generator=g, dtype=torch.float64)
    expected = torch.empty_like(x)
    for b in range(2):
        for h in range(3):
            for w in range(5):
                for i in range(c):
                    n = beta[i] + sum(gamma[i][j] * float(x[b, j, h, w]) ** 2 for j in range(c))
                    v = float(x[b, i, h, w])
                    expected[b, i, h, w] = v * math.sqrt(n) if inverse else v / math.sqrt(n)
    with torch.no_grad():
        out = gdn(x.float())
    torch.testing.assert_close(out, expected.float(), atol=1e-5, rtol=1e-5)


def test_lower_bound_passes_the_gradient_that_raises_x_back_above_the_bound() -> None:
    # compressai's LowerBound: forward max(x, b); backward passes g where x ≥ b or g < 0
    # (a descent step x ← x − lr·g then raises x), and zeroes it only where x < b and g > 0
    bound = 0.5
    x = torch.tensor([-1.0, -1.0, 0.5, 0.5, 2.0, 2.0], requires_grad=True)
    g = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    y = lower_bound(x, bound)
    torch.testing.assert_close(y.detach(), torch.tensor([0.5, 0.5, 0.5, 0.5, 2.0, 2.0]))
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.tensor([0.0, -1.0, 1.0, -1.0, 1.0, -1.0]))


def test_gdn_beta_below_its_bound_recovers_by_gradient_descent() -> None:
    # a raw β stuck below the bound: clamp_min would give it zero gradient forever; with the
    # lower bound, a loss that wants a larger β moves it back above the bound
    gdn = _set(GDN(2), BETA, GAMMA)
    with torch.no_grad():
        gdn.beta.raw.fill_(-0.3)
    x = _pixels([(1.0, 2.0)])
    optimiser = torch.optim.SGD([gdn.beta.raw], lr=0.5)
    for _ in range(50):
        optimiser.zero_grad()
        # the output shrinks as β grows: asking for a small output asks for a large β
        gdn(x).square().sum().backward()
        assert gdn.beta.raw.grad is not None and (gdn.beta.raw.grad < 0).all()
        optimiser.step()
    assert (gdn.beta.raw > gdn.beta.bound).all()
    assert (gdn.beta() > 1e-6).all()
