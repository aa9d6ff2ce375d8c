"""singexp's prior, operator and DeepJSCC chain in deepinv's terms (deepinv 0.5).

deepinv works on images in [0, 1] and calls a denoiser D(u, σ) with u = clean + σ·ω in those
units; singexp's images and its prior live in [−1, 1]. The map between them is x = 2u − 1, so a
noise std σ on u is 2σ on x. This module holds the three objects deepinv's samplers take:

- :class:`PriorDenoiser` — the prior's ε-prediction UNet and its scheduler's ᾱ_t as a
  ``deepinv.models.Denoiser``: σ (in [0, 1] units) → the timestep whose VE noise level
  √((1 − ᾱ_t)/ᾱ_t) is nearest to 2σ, x_t = √ᾱ_t (2u − 1), one UNet call,
  x0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t (Ho et al. 2020, eq. 4 and 15), back to [0, 1];
- :class:`TileSVDPhysics` — a tile operator A of :mod:`singexp.operators` (the same matrix M on
  every s×s tile: average pooling, identity, grey, the fitted projection) as a
  ``deepinv.physics.DecomposablePhysics``, its SVD A = U diag(S) Vᵀ from M's (Kawar et al. 2022,
  Sec. 3: DDRM works in A's spectral space);
- :class:`ChainPhysics` — the noiseless DeepJSCC chain
  (:class:`~singexp.samplers.dps_jscc.JSCCForward`) as a non-linear ``deepinv.physics.Physics``,
  with the data-fidelity prox that DiffPIR asks of it solved by deepinv's gradient descent (its
  step from the chain's Jacobian norm).

Nothing here downloads: the networks are singexp's, passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from deepinv.models import Denoiser
from deepinv.optim.utils import gradient_descent
from deepinv.physics import DecomposablePhysics, GaussianNoise, Physics
from torch import Tensor

from singexp.errors import ConfigError
from singexp.operators import (
    AveragePool,
    ColorToGray,
    Identity,
    LinearOperator,
    PatchProjection,
    _patches,
    _unpatches,
)


def to_unit(x: Tensor) -> Tensor:
    """[−1, 1] → deepinv's [0, 1]: u = (x + 1)/2."""
    return (x + 1) / 2


def from_unit(u: Tensor) -> Tensor:
    """deepinv's [0, 1] → [−1, 1]: x = 2u − 1."""
    return 2 * u - 1


def ve_sigma(alpha_bar: Tensor) -> Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t): x_t = √ᾱ_t (x0 + σ_t ω) (Ho et al. 2020, eq. 4), in the
    prior's [−1, 1] units."""
    ab = alpha_bar.double()
    return ((1 - ab) / ab).sqrt()


class PriorDenoiser(Denoiser):
    """The prior as deepinv's denoiser D(u, σ) (module docstring); u and the output in [0, 1].

    ``alphas_cumprod``: the scheduler's ᾱ_t (T,); ``clip``: x0 clipped to [−1, 1] before it goes
    back to [0, 1] (as deepinv's own diffusion denoisers do). ``on_call`` runs after each UNet
    call (the progress bar); ``calls`` counts them (the NFE).
    """

    def __init__(
        self,
        unet: Any,
        alphas_cumprod: Tensor,
        clip: bool,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.alpha_bar = alphas_cumprod.detach().double().cpu()
        self.log_sigma = ve_sigma(self.alpha_bar).log()
        self.clip = clip
        self.on_call = on_call
        self.calls = 0

    def timesteps(self, sigma: float | Tensor, batch: int) -> Tensor:
        """The timestep per image whose σ_t is nearest to 2σ (in log σ), (B,) on the CPU."""
        s = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu().reshape(-1)
        model_sigma = (2 * s).clamp_min(float(self.log_sigma[0].exp()))  # [0,1] → [−1,1] units
        t = (self.log_sigma[None, :] - model_sigma.log()[:, None]).abs().argmin(dim=1)
        return t.expand(batch) if t.numel() == 1 else t

    def forward(self, x: Tensor, sigma: float | Tensor, *args: Any, **kwargs: Any) -> Tensor:
        t = self.timesteps(sigma, x.shape[0])
        ab = self.alpha_bar[t].to(x.device, x.dtype).reshape(-1, 1, 1, 1)
        param = next(self.unet.parameters())
        x_t = ab.sqrt() * from_unit(x)  # x_t = √ᾱ_t (x0 + σ_t ω) (Ho et al. 2020, eq. 4)
        eps = self.unet(x_t.to(param.dtype), t.to(param.device)).sample[:, : x.shape[1]]
        # x0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t (Ho et al. 2020, eq. 15)
        x0 = (x_t - (1 - ab).sqrt() * eps.to(x.dtype)) / ab.sqrt()
        self.calls += 1
        if self.on_call is not None:
            self.on_call()
        return to_unit(x0.clamp(-1, 1) if self.clip else x0)


# ---- the linear operator A with its SVD ---------------------------------------------------
def tile_matrix(operator: LinearOperator, channels: int) -> tuple[Tensor, int]:
    """(M, s): the r × C·s² matrix that A applies to every s×s tile (all channels), for the
    operators of :mod:`singexp.operators` that are such; another is a one-line error."""
    if isinstance(operator, AveragePool):  # each channel's tile mean: 1/s² on its s² pixels
        s = operator.scale
        ones = torch.full((1, s * s), 1.0 / (s * s), dtype=torch.float64)
        return torch.kron(torch.eye(channels, dtype=torch.float64), ones), s
    if isinstance(operator, Identity):
        return torch.eye(channels, dtype=torch.float64), 1
    if isinstance(operator, ColorToGray):
        return torch.full((1, channels), 1.0 / channels, dtype=torch.float64), 1
    if isinstance(operator, PatchProjection):
        return operator.matrix, operator.scale
    raise ConfigError(
        "operator.name",
        f"{operator!r} has no tile SVD here; DDRM and DiffPIR (forward=linear) take avgpool, "
        "identity, gray or fitted",
    )


class TileSVDPhysics(DecomposablePhysics):
    """A tile operator A (:func:`tile_matrix`) with its SVD, on images (B, C, H, W) in [0, 1].

    M = U_M diag(S) V_Mᵀ (full V_M). Vᵀ x: each tile's vector times V_Mᵀ, laid out as
    (B, C·s², H/s, W/s); U(z) takes the first r of those coefficients times U_M. So
    A = U diag(S) Vᵀ with the singular values S in ``mask`` (zeros beyond rank r), as deepinv's
    DDRM reads them. ``sigma``: the measurement noise std in [0, 1] units (deepinv's
    ``GaussianNoise``).
    """

    def __init__(
        self, operator: LinearOperator, image_shape: tuple[int, ...], sigma: float
    ) -> None:
        channels, height, width = (int(v) for v in image_shape[-3:])
        matrix, scale = tile_matrix(operator, channels)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
        rank, dims = s.numel(), vh.shape[0]
        mask = torch.zeros(1, dims, height // scale, width // scale, dtype=torch.float64)
        mask[:, :rank] = s.reshape(1, rank, 1, 1)
        super().__init__(mask=mask.float(), noise_model=GaussianNoise(sigma=float(sigma)))
        self.scale, self.channels, self.rank = scale, channels, rank
        self.u_matrix, self.vh_matrix = u, vh  # float64, cast to the input's dtype when used
        self.operator = operator

    def V_adjoint(self, x: Tensor) -> Tensor:
        coeff = _patches(x, self.scale) @ self.vh_matrix.T.to(x)
        return coeff.permute(0, 3, 1, 2)

    def V(self, x: Tensor, **kwargs: Any) -> Tensor:
        tiles = x.permute(0, 2, 3, 1) @ self.vh_matrix.to(x)
        return _unpatches(tiles, self.scale, self.channels)

    def U(self, x: Tensor) -> Tensor:
        return (x[:, : self.rank].permute(0, 2, 3, 1) @ self.u_matrix.T.to(x)).permute(0, 3, 1, 2)

    def U_adjoint(self, x: Tensor, **kwargs: Any) -> Tensor:
        top = (x.permute(0, 2, 3, 1) @ self.u_matrix.to(x)).permute(0, 3, 1, 2)
        rest = top.new_zeros(top.shape[0], self.mask.shape[1] - self.rank, *top.shape[2:])
        return torch.cat([top, rest], dim=1)


# ---- the DeepJSCC chain -------------------------------------------------------------------
class ChainPhysics(Physics):
    """The noiseless DeepJSCC chain A(x) at the test SNR (``forward``: a
    :class:`~singexp.samplers.dps_jscc.JSCCForward`) on images u in [0, 1]:
    A_u(u) = (A(2u − 1) + 1)/2 (the same Jacobian J as A), noise std ``sigma`` in [0, 1] units.

    :meth:`prox_l2` — argmin_v γ/2 ‖A_u(v) − y‖² + ½ ‖v − z‖², which DiffPIR's data step asks for
    (Zhu et al. 2023, Alg. 1) and which has no closed form here — runs ``steps`` iterations of
    deepinv's ``gradient_descent`` from z. The objective's gradient γ Jᵀ(A_u(v) − y) + (v − z)
    is Lipschitz with constant 1 + γL, L = ‖J‖², so the step is 1/(1 + γL) (Nesterov,
    *Introductory Lectures on Convex Optimization*, 2004, Thm. 2.1.14: gradient descent with
    step 1/L_f converges), with L per image estimated at ``y`` by :meth:`estimate_lipschitz`:
    the step stays stable while ‖J‖² along the way is below twice that estimate.
    """

    def __init__(self, forward: Callable[[Tensor], Tensor], sigma: float, steps: int) -> None:
        super().__init__(noise_model=GaussianNoise(sigma=float(sigma)))
        self.chain, self.steps = forward, int(steps)
        self.lipschitz: Tensor | None = None

    def A(self, x: Tensor, **kwargs: Any) -> Tensor:
        return to_unit(self.chain(from_unit(x)))

    def A_vjp(self, x: Tensor, v: Tensor) -> Tensor:
        """Jᵀv by autograd (deepinv's default uses torch.func, which the codec's GDN bound, a
        custom autograd Function, does not support; deepinv's samplers run under no_grad)."""
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.A(x_in), x_in, v)
        return grad

    def estimate_lipschitz(self, u: Tensor, iterations: int = 10, seed: int = 0) -> Tensor:
        """‖J‖² at ``u`` per image (B, 1, 1, 1): power iteration on JᵀJ (Golub & Van Loan,
        *Matrix Computations*, §8.2.1), J v by double backward."""
        v = torch.randn(u.shape, generator=torch.Generator().manual_seed(seed)).to(u)
        norm = torch.ones(u.shape[0], 1, 1, 1, dtype=u.dtype, device=u.device)
        for _ in range(iterations):
            v = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
            with torch.enable_grad():
                _, jv = torch.autograd.functional.jvp(self.A, u, v)
            v = self.A_vjp(u, jv)
            norm = v.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        self.lipschitz = norm.detach()
        return self.lipschitz

    def prox_l2(self, z: Tensor, y: Tensor, gamma: float | Tensor, **kwargs: Any) -> Tensor:
        g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device)
        lipschitz = self.lipschitz if self.lipschitz is not None else self.estimate_lipschitz(y)

        def grad(v: Tensor) -> Tensor:
            return g * self.A_vjp(v, self.A(v) - y) + (v - z)

        step = 1 / (1 + g * lipschitz)
        return gradient_descent(grad, z, step_size=step, max_iter=self.steps, tol=0.0)


def ddrm_sigmas(scheduler: Any, steps: int) -> np.ndarray:
    """The noise levels of DDRM's steps, in deepinv's [0, 1] units: σ_t/2 at the scheduler's
    respaced timesteps (``set_timesteps(steps)``), decreasing."""
    scheduler.set_timesteps(int(steps))
    t = scheduler.timesteps.long().cpu()
    sigma = ve_sigma(scheduler.alphas_cumprod.cpu()[t]) / 2
    return sigma.numpy()


def run_seeded(seed: int, device: torch.device, call: Callable[[], Tensor]) -> Tensor:
    """``call()`` with torch's global generators seeded by ``seed`` and restored after:
    deepinv's DDRM and DiffPIR draw their noise with ``torch.randn_like``."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return call()
