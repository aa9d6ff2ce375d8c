"""Linear degradation operators A for SING-Zero (paper: SING-Zero), as objects in DDNM/DDRM's style.

An operator maps images (B, C, H, W) to measurements ``A(x)`` and back with its pseudo-inverse
``A_pinv`` (A† with A A† = I for every operator here, so A A† A = A and A† A A† = A†) and, where
it is defined, its adjoint ``A_adjoint`` (Aᵀ). ``A_pinv(A(x))`` is the projection onto A's
range; ``x - A_pinv(A(x))`` is the null-space part that the diffusion prior fills in.

The operators are deterministic; an operator with randomness (a blur kernel) must draw it once,
seeded, at construction. Beside average pooling (the paper's downsampling) the operator ablation
(``+experiment=ablation_operator``) compares two other linear approximations of the chain:

- :class:`StridedBlur` — a Gaussian blur followed by keeping every s-th pixel (a strided
  convolution with circular boundary), its exact pseudo-inverse A† = Aᵀ(AAᵀ)⁻¹ in the Fourier
  domain of the coarse grid;
- :class:`PatchProjection` fitted by :func:`fit_patch_projection` — a data-driven A fitted in
  closed form to pairs (x, DeepJSCC(x)): the orthogonal projection onto the patch directions in
  which keeping the received image lowers the squared error most (its docstring derives it).

SING-Zero's downsampling factor from the BCR (paper: SING-Zero leaves it open) —
:func:`scale_for_bcr`: the largest s dividing the image size such that the measurement A x
keeps at least as many real values as the channel carries, 3·H·W/s² ≥ 2k = 2ρ·3·H·W, i.e.
s ≤ √(1/(2ρ)); ρ = 1/192 → 8, 1/384 → 8, 1/768 → 16 (256 px or 32 px images).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from singexp.bcr import parse_ratio
from singexp.errors import ConfigError

Shape = tuple[int, ...]


class LinearOperator:
    """A linear map A on images (B, C, H, W) with its pseudo-inverse A† and adjoint Aᵀ."""

    name: str = "linear"
    #: the one non-zero singular value σ of A when A Aᵀ = σ² I (every operator here), else None;
    #: DDNM+ scales y's noise by 1/σ in A's range (DDNM's ``ddnm_plus_diffusion``)
    singular_value: float | None = None

    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def A_pinv(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no adjoint")

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        """Shape of ``A(x)`` for ``x`` of shape ``in_shape`` (…, C, H, W)."""
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        """A†A x, the range-space part of ``x``."""
        return self.A_pinv(self.A(x))

    def __call__(self, x: Tensor) -> Tensor:
        return self.A(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(LinearOperator):
    """A = I (no degradation): SING-Zero then returns the measurement itself."""

    name = "identity"
    singular_value = 1.0

    def A(self, x: Tensor) -> Tensor:
        return x

    def A_pinv(self, y: Tensor) -> Tensor:
        return y

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        return tuple(in_shape)


class AveragePool(LinearOperator):
    """A = s×s average pooling; A† = nearest (replication) upsampling; Aᵀ = A†/s².

    A has orthogonal rows of norm 1/s, so A Aᵀ = I/s² and A† = Aᵀ(A Aᵀ)⁻¹ = s²Aᵀ: replication.
    """

    name = "avgpool"

    def __init__(self, scale: int) -> None:
        if isinstance(scale, bool) or int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        self.singular_value = 1.0 / self.scale  # A Aᵀ = I/s²

    def A(self, x: Tensor) -> Tensor:
        s = self.scale
        return x if s == 1 else F.avg_pool2d(x, s)

    def A_pinv(self, y: Tensor) -> Tensor:
        s = self.scale
        if s == 1:
            return y
        *lead, h, w = y.shape
        # replicate each value into an s×s block (a view + one copy; exact, unlike bilinear)
        up = y.reshape(*lead, h, 1, w, 1).expand(*lead, h, s, w, s)
        return up.reshape(*lead, h * s, w * s)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.A_pinv(y) / self.scale**2

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        *lead, h, w = in_shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"{h}x{w} is not divisible by the pooling scale {self.scale}")
        return (*lead, h // self.scale, w // self.scale)

    def __repr__(self) -> str:
        return f"AveragePool(scale={self.scale})"


class ColorToGray(LinearOperator):
    """A = channel mean (C → 1 channel); A† = replication to C channels; Aᵀ = A†/C."""

    name = "gray"

    def __init__(self, channels: int = 3) -> None:
        self.channels = int(channels)
        self.singular_value = 1.0 / math.sqrt(self.channels)  # A Aᵀ = I/C

    def A(self, x: Tensor) -> Tensor:
        return x.mean(dim=-3, keepdim=True)

    def A_pinv(self, y: Tensor) -> Tensor:
        *lead, _, h, w = y.shape
        return y.expand(*lead, self.channels, h, w)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.A_pinv(y) / self.channels

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        *lead, _, h, w = in_shape
        return (*lead, 1, h, w)

    def __repr__(self) -> str:
        return f"ColorToGray(channels={self.channels})"


class StridedBlur(LinearOperator):
    """A = D_s K: a per-channel Gaussian blur K (std ``sigma`` px, circular boundary) followed by
    keeping every s-th pixel D_s — a strided convolution with a Gaussian kernel; Aᵀ = K Dᵀ
    (zero insertion, then the same symmetric blur).

    A† = Aᵀ(AAᵀ)⁻¹ exactly (A has full row rank: the kernel's spectrum is positive). AAᵀ = D K Kᵀ
    Dᵀ is a convolution on the coarse grid (a circulant matrix: the aliases of |K̂|² summed, as in
    polyphase analysis, e.g. Vaidyanathan, *Multirate Systems and Filter Banks*, 1993, §4), so
    its inverse is a division in that grid's 2-D DFT. The division's symbol is measured as the
    DFT of AAᵀ applied to a coarse impulse, which is exact whatever the DFT's conventions.
    """

    name = "strided_blur"

    def __init__(self, scale: int, sigma: float | None = None) -> None:
        if isinstance(scale, bool) or int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        # default std s/2: the blur then roughly cuts at the coarse grid's Nyquist frequency
        self.sigma = float(self.scale / 2 if sigma is None else sigma)
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        self._spectra: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    def _kernel_spectrum(self, h: int, w: int) -> Tensor:
        """The rfft2 of the circular Gaussian kernel on an h×w grid (real: the kernel is even)."""

        def axis(n: int) -> Tensor:
            d = torch.arange(n, dtype=torch.float64)
            d = torch.minimum(d, n - d)  # circular distance to pixel 0
            return torch.exp(-(d**2) / (2 * self.sigma**2))

        kernel = axis(h)[:, None] * axis(w)[None, :]
        kernel = kernel / kernel.sum()
        return torch.fft.rfft2(kernel).real

    def _spectra_for(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        """(K̂ on the fine grid, the DFT of AAᵀ on the coarse grid), float64, cached per size."""
        if (h, w) not in self._spectra:
            k_hat = self._kernel_spectrum(h, w)
            s = self.scale
            impulse = torch.zeros(1, 1, h // s, w // s, dtype=torch.float64)
            impulse[..., 0, 0] = 1.0
            response = self._blur_down(self._up_blur(impulse, k_hat, h, w), k_hat)
            gram = torch.fft.rfft2(response[0, 0]).real  # AAᵀ is symmetric: a real spectrum
            if not bool((gram > 1e-12).all()):
                raise ValueError(f"{self!r}: AAᵀ is singular at {h}x{w}; use a smaller sigma")
            self._spectra[(h, w)] = (k_hat, gram)
        return self._spectra[(h, w)]

    def _blur_down(self, x: Tensor, k_hat: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        blurred = torch.fft.irfft2(torch.fft.rfft2(x) * k_hat.to(x), s=(h, w))
        return blurred[..., :: self.scale, :: self.scale]

    def _up_blur(self, y: Tensor, k_hat: Tensor, h: int, w: int) -> Tensor:
        up = y.new_zeros((*y.shape[:-2], h, w))
        up[..., :: self.scale, :: self.scale] = y
        return torch.fft.irfft2(torch.fft.rfft2(up) * k_hat.to(y), s=(h, w))

    def _check(self, h: int, w: int) -> None:
        if h % self.scale or w % self.scale:
            raise ValueError(f"{h}x{w} is not divisible by the stride {self.scale}")

    def A(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        self._check(h, w)
        k_hat, _ = self._spectra_for(h, w)
        return self._blur_down(x, k_hat)

    def A_adjoint(self, y: Tensor) -> Tensor:
        h, w = y.shape[-2] * self.scale, y.shape[-1] * self.scale
        k_hat, _ = self._spectra_for(h, w)
        return self._up_blur(y, k_hat, h, w)

    def A_pinv(self, y: Tensor) -> Tensor:
        h, w = y.shape[-2] * self.scale, y.shape[-1] * self.scale
        k_hat, gram = self._spectra_for(h, w)
        # (AAᵀ)⁻¹ y as a division in the coarse grid's DFT, then Aᵀ
        solved = torch.fft.irfft2(torch.fft.rfft2(y) / gram.to(y), s=tuple(y.shape[-2:]))
        return self._up_blur(solved, k_hat, h, w)

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        *lead, h, w = in_shape
        self._check(h, w)
        return (*lead, h // self.scale, w // self.scale)

    def __repr__(self) -> str:
        return f"StridedBlur(scale={self.scale}, sigma={self.sigma:g})"


def _patches(x: Tensor, s: int) -> Tensor:
    """(B, C, H, W) → (B, H/s, W/s, C·s·s): each non-overlapping s×s tile as one vector."""
    b, c, h, w = x.shape
    if h % s or w % s:
        raise ValueError(f"{h}x{w} is not divisible by the patch side {s}")
    tiles = x.reshape(b, c, h // s, s, w // s, s).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(b, h // s, w // s, c * s * s)


def _unpatches(v: Tensor, s: int, channels: int) -> Tensor:
    """Inverse of :func:`_patches`: (B, h, w, C·s·s) → (B, C, h·s, w·s)."""
    b, h, w, _ = v.shape
    tiles = v.reshape(b, h, w, channels, s, s).permute(0, 3, 1, 4, 2, 5)
    return tiles.reshape(b, channels, h * s, w * s)


class PatchProjection(LinearOperator):
    """A = the same r × (C·s²) matrix M applied to every non-overlapping s×s tile (all C
    channels): a strided convolution with kernel = stride = s and r output channels.

    A is block diagonal with blocks M, so A† is block diagonal with blocks M† (computed once, in
    float64, by SVD) and A A† A = A, A†A an orthogonal projection hold exactly as for M. When M
    has orthonormal rows (the fitted operator), A† = Aᵀ and A Aᵀ = I (singular value 1).
    """

    name = "patch"

    def __init__(self, matrix: Tensor, scale: int, channels: int = 3, info: Any = None) -> None:
        m = torch.as_tensor(matrix, dtype=torch.float64)
        if m.ndim != 2 or m.shape[1] != channels * scale * scale or m.shape[0] < 1:
            raise ValueError(
                f"matrix must be r x {channels * scale * scale} (C·s²), got {tuple(m.shape)}"
            )
        self.scale = int(scale)
        self.channels = int(channels)
        self.matrix = m
        self.pinv = torch.linalg.pinv(m)  # (C·s², r)
        gram = m @ m.T
        eye = torch.eye(m.shape[0], dtype=torch.float64)
        self.singular_value = 1.0 if bool(torch.allclose(gram, eye, atol=1e-10)) else None
        #: what the fit found (rank, training pairs, ...), recorded in metrics.json
        self.info: dict[str, Any] = dict(info or {})

    @property
    def rank(self) -> int:
        return int(self.matrix.shape[0])

    def A(self, x: Tensor) -> Tensor:
        v = _patches(x, self.scale) @ self.matrix.T.to(x)
        return v.permute(0, 3, 1, 2)

    def _back(self, y: Tensor, matrix: Tensor) -> Tensor:
        v = y.permute(0, 2, 3, 1) @ matrix.T.to(y)
        return _unpatches(v, self.scale, self.channels)

    def A_pinv(self, y: Tensor) -> Tensor:
        return self._back(y, self.pinv)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self._back(y, self.matrix.T)

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        *lead, _, h, w = in_shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"{h}x{w} is not divisible by the patch side {self.scale}")
        return (*lead, self.rank, h // self.scale, w // self.scale)

    def __repr__(self) -> str:
        return f"PatchProjection(scale={self.scale}, rank={self.rank})"


def fit_patch_projection(
    x: Tensor, x_hat: Tensor, scale: int, rank: int | str = "auto"
) -> PatchProjection:
    """The A that DeepJSCC's pairs (``x``, ``x_hat``) call for, in closed form (least squares).

    SING-Zero keeps A†A x̂ and lets the prior fill (I − A†A). Model the fill by the data mean μ:
    the estimate x̃ = P x̂ + (I − P) μ, P = A†A an orthogonal projection on tile vectors, has
    mean squared error (P and I − P are orthogonal, so the cross term vanishes)

        E‖x − x̃‖² = tr(P Σ_e) + tr((I − P) Σ_x) = tr(Σ_x) + tr(P (Σ_e − Σ_x)),

    Σ_e = E[(x̂ − x)(x̂ − x)ᵀ], Σ_x = Cov(x). Over rank-r projections this is least for P onto
    the r eigenvectors of Σ_e − Σ_x with the smallest eigenvalues (Ky Fan's minimum principle);
    ``rank=auto`` keeps every direction with a negative eigenvalue — where the received image
    explains x better than the mean does — which minimises the empirical squared error over all
    projections. A = those eigenvectors as rows (orthonormal: A† = Aᵀ, A Aᵀ = I).
    """
    if x.shape != x_hat.shape or x.ndim != 4:
        raise ValueError(f"x and x_hat must be (B, C, H, W) of one shape: {x.shape}, {x_hat.shape}")
    s = int(scale)
    p = _patches(x.double(), s).reshape(-1, x.shape[1] * s * s)
    e = _patches(x_hat.double(), s).reshape(-1, x.shape[1] * s * s) - p
    centred = p - p.mean(dim=0)
    n = p.shape[0]
    sigma_x = centred.T @ centred / n
    sigma_e = e.T @ e / n
    gap = (sigma_e - sigma_x + (sigma_e - sigma_x).T) / 2  # symmetric up to rounding
    values, vectors = torch.linalg.eigh(gap)  # ascending
    negative = int((values < 0).sum())
    if isinstance(rank, str):
        if rank.strip().lower() != "auto":
            raise ConfigError("operator.rank", f"{rank!r} is not a positive integer or 'auto'")
        r = max(1, negative)
    else:
        r = int(rank)
        if isinstance(rank, bool) or not 1 <= r <= values.numel():
            raise ConfigError(
                "operator.rank", f"{rank!r} must be 'auto' or an integer in 1..{values.numel()}"
            )
    mse = float(torch.trace(sigma_x) + values[:r].sum()) / p.shape[1]
    info = {
        "rank": r,
        "dims": int(values.numel()),
        "negative_eigenvalues": negative,
        "fit_tiles": n,
        "fit_images": int(x.shape[0]),
        # per-value MSE of the fitted estimate P x̂ + (I − P) μ on the pairs, and of x̂ itself
        "fit_mse": mse,
        "received_mse": float(torch.trace(sigma_e)) / p.shape[1],
    }
    return PatchProjection(vectors[:, :r].T.contiguous(), s, x.shape[1], info)


# ---- SING-Zero's scale rule and construction from config ----------------------------------
def scale_for_bcr(ratio: Any, image_size: int) -> int:
    """The largest s dividing ``image_size`` with 3HW/s² ≥ 2k = 2ρ·3HW, i.e. s ≤ √(1/(2ρ)).

    The measurement A x then keeps at least as many real values as the channel carries
    (module docstring): ρ = 1/192 → 8, 1/384 → 8, 1/768 → 16.
    """
    rho = ratio if isinstance(ratio, Fraction) else parse_ratio(ratio)
    bound = max(1, math.isqrt(int(1 / (2 * rho))))  # exact: s² ≤ ⌊1/(2ρ)⌋ for integer s
    return max(s for s in range(1, min(bound, int(image_size)) + 1) if image_size % s == 0)


def _scale(value: Any, ratio: Any, image_size: int) -> int:
    if value is None or str(value).strip().lower() == "auto":
        return scale_for_bcr(ratio, image_size)
    try:
        scale = int(str(value).strip())
    except ValueError:
        scale = 0
    if isinstance(value, bool) or scale < 1:
        raise ConfigError("operator.scale", f"{value!r} is not a positive integer or 'auto'")
    if image_size % scale:
        raise ConfigError(
            "operator.scale",
            f"{scale} does not divide the image size {image_size}; use a divisor "
            f"(e.g. {scale_for_bcr(ratio, image_size)}) or 'auto'",
        )
    return scale


def _sigma(value: Any) -> float | None:
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        sigma = -1.0
    if isinstance(value, bool) or not sigma > 0:
        raise ConfigError("operator.sigma", f"{value!r} is not a positive number (px) or 'auto'")
    return sigma


#: operator name -> factory(scale value, ratio, image size, options); add new operators here
OPERATORS: dict[str, Callable[[Any, Any, int, dict[str, Any]], LinearOperator]] = {
    "avgpool": lambda scale, ratio, size, o: AveragePool(_scale(scale, ratio, size)),
    "identity": lambda scale, ratio, size, o: Identity(),
    "gray": lambda scale, ratio, size, o: ColorToGray(),
    "strided_blur": lambda scale, ratio, size, o: StridedBlur(
        _scale(scale, ratio, size), _sigma(o.get("sigma"))
    ),
}
#: operators fitted to DeepJSCC pairs at run start (:func:`operator_from_config` with ``pairs``)
FITTED = ("fitted",)
#: the keys each operator reads besides ``name`` and ``scale``
OPTIONS: dict[str, tuple[str, ...]] = {
    "strided_blur": ("sigma",),
    "fitted": ("rank", "fit_images"),
}


@dataclass(frozen=True)
class OperatorConfig:
    """The ``operator`` config group, checked once (:func:`operator_settings`, from
    ``config.validate``): SING-Zero's A by name, its tile scale (a whole number or ``auto``: the
    BCR rule) and the operator's own keys (:data:`OPTIONS`)."""

    name: str
    scale: int | str
    options: dict[str, Any]


def operator_settings(node: Mapping[str, Any]) -> OperatorConfig:
    """The ``operator`` group as an :class:`OperatorConfig`; an unknown name, a scale that is
    neither a whole number nor ``auto``, or a key the operator does not have is a one-line
    error naming ``operator.<key>``."""
    items = {str(k): v for k, v in dict(node).items()}
    name = str(items.pop("name", None))
    if name not in OPERATORS and name not in FITTED:
        raise ConfigError(
            "operator.name", f"unknown {name!r}; choose one of {[*OPERATORS, *FITTED]}"
        )
    if "scale" not in items:
        raise ConfigError("operator.scale", "missing; a whole number or auto")
    scale = items.pop("scale")
    if scale != "auto" and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise ConfigError(
            "operator.scale", f"{scale!r} is neither a positive whole number nor auto"
        )
    _check_options(name, items)
    return OperatorConfig(name, scale, items)


def build_operator(
    name: str, scale: Any = "auto", ratio: Any = "1/192", image_size: int = 32, **options: Any
) -> LinearOperator:
    """The operator of the ``operator`` config group (``conf/operator/*.yaml``).

    ``scale``: an int or ``auto`` (:func:`scale_for_bcr` from ``ratio`` and ``image_size``);
    ``options``: the operator's other keys (:data:`OPTIONS`). Errors name ``operator.name`` /
    ``operator.scale`` / the option. Fitted operators (:data:`FITTED`) need training pairs:
    :func:`operator_from_config`.
    """
    name = str(name)
    if name in FITTED:
        raise ConfigError(
            "operator.name",
            f"{name!r} is fitted to DeepJSCC pairs: build it with operator_from_config(pairs=...)",
        )
    factory = OPERATORS.get(name)
    if factory is None:
        raise ConfigError(
            "operator.name", f"unknown {name!r}; choose one of {[*OPERATORS, *FITTED]}"
        )
    _check_options(name, options)
    return factory(scale, ratio, int(image_size), options)


def _check_options(name: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTIONS.get(name, ())))
    if unknown:
        allowed = ", ".join(f"operator.{k}" for k in OPTIONS.get(name, ())) or "none"
        raise ConfigError(
            f"operator.{unknown[0]}",
            f"is not a key of operator {name!r} (its keys besides name and scale: {allowed}); "
            "remove it or pick the operator that has it",
        )


#: training pairs for a fitted operator: n → (x, DeepJSCC(x)), both (n, C, H, W)
Pairs = Callable[[int], tuple[Tensor, Tensor]]


def operator_from_config(
    node: Any, ratio: Any, image_size: int, pairs: Pairs | None = None
) -> LinearOperator:
    """The operator of an ``operator`` config node (a mapping with ``name``, ``scale`` and the
    operator's :data:`OPTIONS`). ``fitted``: :func:`fit_patch_projection` on ``pairs(fit_images)``
    with tile side ``scale`` — fitted at run start, deterministic when ``pairs`` is."""
    if isinstance(node, OperatorConfig):
        node = {"name": node.name, "scale": node.scale, **node.options}
    items = {str(k): v for k, v in dict(node).items()}
    name = str(items.pop("name", None))
    scale = items.pop("scale", "auto")
    if name not in FITTED:
        return build_operator(name, scale, ratio, image_size, **items)
    _check_options(name, items)
    count = items.get("fit_images", 512)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError("operator.fit_images", f"{count!r} is not a positive integer")
    if pairs is None:
        raise ConfigError("operator.name", f"{name!r} needs DeepJSCC pairs to fit A on")
    x, x_hat = pairs(count)
    return fit_patch_projection(
        x, x_hat, _scale(scale, ratio, int(image_size)), items.get("rank", "auto")
    )


def codec_pairs(
    codec: Callable[[Tensor, float, torch.Generator], Tensor],
    dataset: Sequence[Tensor],
    count: int,
    snr_db: float,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """(x, DeepJSCC(x)) for the first ``count`` images of ``dataset`` (the training split: never
    the test images), channel noise from ``seed``: the same pairs on every run."""
    n = min(int(count), len(dataset))
    x = torch.stack([dataset[i] for i in range(n)])
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        x_hat = torch.cat(
            [codec(x[i : i + 256], snr_db, generator) for i in range(0, n, 256)]
        ).clamp(-1, 1)
    return x, x_hat


def describe_operator(operator: LinearOperator, name: str) -> dict[str, Any]:
    """What metrics.json records of the operator: its config name, scale and what a fit found."""
    record: dict[str, Any] = {"name": name, "scale": getattr(operator, "scale", None)}
    if isinstance(operator, StridedBlur):
        record["sigma"] = operator.sigma
    if isinstance(operator, PatchProjection):
        record.update(operator.info)
    return record


def measurement_noise_std(operator: LinearOperator, x: Tensor, x_hat: Tensor) -> float:
    """σ_y of y = A x̂ taken as a noisy measurement of A x: the RMS of A x̂ − A x over every
    value (DDNM+'s effective noise std, paper: SING-Zero; ``sampler.sigma_y=auto`` measures it on
    held-out images sent through the codec at the test SNR)."""
    return float((operator.A(x_hat) - operator.A(x)).double().pow(2).mean().sqrt())
