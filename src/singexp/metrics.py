"""Image quality metrics: PSNR, SSIM, MS-SSIM, ST-LPIPS, LPIPS (per image) and SWD (per set).

Conventions: images are float tensors (B, 3, H, W) in [-1, 1]. Values outside that range are
clamped before any metric (a reconstruction is judged as the image it would be saved as).

Nothing here ever downloads. ST-LPIPS uses the weights shipped inside the ``stlpips-pytorch``
wheel; LPIPS needs torchvision's ImageNet backbone weights, which are read only from the torch
hub cache (``torch.hub.get_dir()/checkpoints``); when they are absent LPIPS is reported as
missing (``None``), never computed from random weights. Metric networks are built lazily, once
per process and device, in eval mode with ``requires_grad=False``.

Perceptual metrics see images whose smaller side is at least ``perceptual_size`` (default 64):
smaller inputs are upsampled bilinearly first, because at 32 px ST-LPIPS hardly sees noise
(paper: experiments). :class:`ImageMetrics` reports the size used in :meth:`ImageMetrics.status`.

One concern, one module (over 600 lines): the metrics share their input conventions, the
originals' features computed once per batch for every method (``per_image_many``,
``set_level_many``) and the offline loading of their networks; split, each part would import
the others' private state.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import importlib.util
import logging
import re
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from singexp.errors import ConfigError, SingexpError
from singexp.schema import check_schema

logger = logging.getLogger("singexp.metrics")

#: PSNR of identical images is +inf; it is capped here (MSE floor 1e-10 on the [0, 1] scale) so
#: that means stay finite and JSON-ready.
PSNR_MAX_DB = 100.0

#: torchmetrics' MS-SSIM defaults: Gaussian kernel 11, five scales (Wang et al. 2003 weights).
MS_SSIM_KERNEL = 11
MS_SSIM_SCALES = 5
#: After the four 2× average-poolings between the five scales the image must still hold one
#: kernel: floor(size / 16) >= 11, i.e. size >= 176 (torchmetrics rejects anything smaller).
MS_SSIM_MIN_SIZE = MS_SSIM_KERNEL * 2 ** (MS_SSIM_SCALES - 1)

#: Metrics returned by :meth:`ImageMetrics.per_image`, in report order.
PER_IMAGE_KEYS: tuple[str, ...] = ("psnr", "ssim", "ms_ssim", "stlpips", "lpips")

#: LPIPS backbones: the torchvision weights enum whose IMAGENET1K_V1 file LPIPS expects.
_LPIPS_BACKBONES: dict[str, str] = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}

_NET_CACHE: dict[tuple[str, ...], nn.Module] = {}
_MISSING: dict[tuple[str, ...], str] = {}
_CACHE_LOCK = threading.RLock()


# --------------------------------------------------------------------------- helpers


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(
            f"expected pred and target of the same shape (B, 3, H, W), got {tuple(pred.shape)}"
            f" and {tuple(target.shape)}"
        )


def _clamp(x: Tensor) -> Tensor:
    return x.float().clamp(-1.0, 1.0)


def _to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return (_clamp(x) + 1.0) / 2.0


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """Make any torch hub download (torchvision weights included) fail at once instead of
    reaching for the network; used around every metric network construction."""

    def refuse(url: str, *args: Any, **kwargs: Any) -> None:
        raise SingexpError(f"metrics: refusing to download {url} (metrics never download)")

    hub = torch.hub
    saved = hub.download_url_to_file
    hub.download_url_to_file = refuse
    try:
        yield
    finally:
        hub.download_url_to_file = saved


# --------------------------------------------------------------------------- PSNR / SSIM


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB on the [0, 1] scale (data range 1), shape (B,).

    PSNR = 10·log10(1 / MSE) (torchmetrics). Identical images give +inf mathematically; the
    value is capped at :data:`PSNR_MAX_DB` (100 dB) so that it stays finite.
    """
    _check_pair(pred, target)
    value = peak_signal_noise_ratio(
        _to_unit(pred), _to_unit(target), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return value.clamp(max=PSNR_MAX_DB)


def psnr_from_mse(mse: Tensor, peak: float = 2.0) -> Tensor:
    """PSNR in dB from per-image MSEs of images whose values span ``peak`` (2: [−1, 1]), capped
    at :data:`PSNR_MAX_DB` as :func:`psnr` is (for a loop that has the MSEs already)."""
    return (10 * torch.log10(peak**2 / mse.clamp_min(1e-20))).clamp(max=PSNR_MAX_DB)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM (Wang et al. 2004; Gaussian kernel 11, σ 1.5, data range 1), shape (B,)."""
    _check_pair(pred, target)
    value = structural_similarity_index_measure(
        _to_unit(pred), _to_unit(target), data_range=1.0, reduction="none"
    )
    assert isinstance(value, Tensor)  # no return_full_image: the per-image values alone
    return value


def ms_ssim_supported(size: int | tuple[int, int]) -> bool:
    """Whether MS-SSIM with 5 scales and kernel 11 can be computed at ``size`` (int or (H, W)):
    both sides must be >= :data:`MS_SSIM_MIN_SIZE` (176)."""
    sides = (size, size) if isinstance(size, int) else tuple(size)
    # torchmetrics' check: side // 2**(scales-1) must exceed kernel - 1
    return all(int(s) // 2 ** (MS_SSIM_SCALES - 1) > MS_SSIM_KERNEL - 1 for s in sides)


def ms_ssim(pred: Tensor, target: Tensor) -> Tensor | None:
    """Per-image MS-SSIM (Wang et al. 2003; torchmetrics defaults: 5 scales, kernel 11), shape (B,).

    Returns ``None`` when the image is too small (see :func:`ms_ssim_supported`). Negative
    per-scale terms are clipped to 0 (``normalize="relu"``); a negative base raised to the
    fractional scale weight would otherwise give NaN, and non-negative terms are unchanged.
    """
    _check_pair(pred, target)
    if not ms_ssim_supported((pred.shape[-2], pred.shape[-1])):
        return None
    return multiscale_structural_similarity_index_measure(
        _to_unit(pred), _to_unit(target), data_range=1.0, reduction="none", normalize="relu"
    )


# --------------------------------------------------------------------------- perceptual size


def perceptual_input_hw(height: int, width: int, perceptual_size: int) -> tuple[int, int]:
    """The (H, W) the perceptual metrics see: images whose smaller side is below
    ``perceptual_size`` are scaled up (aspect ratio kept) so that it equals ``perceptual_size``;
    larger images are left as they are."""
    short = min(height, width)
    if short >= perceptual_size:
        return height, width
    scale = perceptual_size / short
    return max(perceptual_size, round(height * scale)), max(perceptual_size, round(width * scale))


def perceptual_resize(x: Tensor, perceptual_size: int) -> Tensor:
    """Bilinear upsampling (antialias off) to :func:`perceptual_input_hw`; no-op otherwise."""
    hw = perceptual_input_hw(x.shape[-2], x.shape[-1], perceptual_size)
    if hw == (x.shape[-2], x.shape[-1]):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=False)


# --------------------------------------------------------------------------- ST-LPIPS


def _stlpips_weights_file() -> Path:
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or spec.origin is None:
        raise ImportError("the stlpips-pytorch package is not installed")
    return Path(spec.origin).parent / "weights" / "vST0.0" / "alex_shift_tolerant.pth"


def _build_stlpips() -> nn.Module:
    """ST-LPIPS (Ghildyal & Liu, ECCV 2022), AlexNet shift-tolerant variant, fully offline.

    ``stlpips_pytorch.stlpips.LPIPS(variant="shift_tolerant")`` builds its anti-aliased AlexNet
    from scratch (no torchvision weights); backbone and linear layers both come from the
    ``weights/vST0.0/alex_shift_tolerant.pth`` file in the wheel. The package loads that file
    with ``strict=False``, so it is loaded here instead and checked to cover every parameter.
    """
    path = _stlpips_weights_file()
    if not path.is_file():
        raise FileNotFoundError(f"ST-LPIPS weights not found at {path}")
    with _no_downloads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module("stlpips_pytorch.stlpips")
        net: nn.Module = module.LPIPS(
            pretrained=False, net="alex", variant="shift_tolerant", verbose=False
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    result = net.load_state_dict(state, strict=False)
    # `lins.k` is the same module as `lin{k}` (registered twice), so only those may be absent
    missing = [k for k in result.missing_keys if not re.fullmatch(r"lins\.\d+\..*", k)]
    if missing or result.unexpected_keys:
        raise SingexpError(
            f"ST-LPIPS weights {path} do not match the network: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return net


def _build_lpips(net_name: str, backbone_file: Path) -> nn.Module:
    """LPIPS v0.1 (Zhang et al., CVPR 2018) with its backbone read from a local torchvision file.

    ``pnet_rand=True`` keeps ``lpips`` from asking torchvision for pretrained weights; the
    ImageNet backbone is then loaded from ``backbone_file`` (torchvision key names
    ``features.N.*`` map to lpips' ``sliceK.N.*``), the linear layers from the lpips wheel.
    """
    with _no_downloads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module("lpips")
        model: nn.Module = module.LPIPS(
            pretrained=True, net=net_name, version="0.1", pnet_rand=True, verbose=False
        )
    source = torch.load(backbone_file, map_location="cpu", weights_only=True)
    backbone = model.get_submodule("net")
    target = backbone.state_dict()
    mapped: dict[str, Tensor] = {}
    for key in target:
        match = re.fullmatch(r"slice\d+\.(\d+)\.(.+)", key)
        src_key = f"features.{match.group(1)}.{match.group(2)}" if match else key
        if src_key not in source:
            raise SingexpError(f"LPIPS backbone file {backbone_file} lacks {src_key}")
        mapped[key] = source[src_key]
    backbone.load_state_dict(mapped, strict=True)
    return model


def _finish(net: nn.Module, device: torch.device) -> nn.Module:
    net = net.eval().to(device)
    net.requires_grad_(False)
    return net


def _cached(key: tuple[str, ...], device: torch.device, build: Any) -> nn.Module:
    """One instance per process and device; the CPU copy is the master other devices copy."""
    with _CACHE_LOCK:
        full = (*key, str(device))
        if full not in _NET_CACHE:
            cpu_key = (*key, "cpu")
            if cpu_key not in _NET_CACHE:
                _NET_CACHE[cpu_key] = _finish(build(), torch.device("cpu"))
            if full != cpu_key:
                _NET_CACHE[full] = _finish(copy.deepcopy(_NET_CACHE[cpu_key]), device)
        return _NET_CACHE[full]


def _report_missing(key: tuple[str, ...], reason: str) -> None:
    """Remember why a metric is missing and log it once per process."""
    with _CACHE_LOCK:
        if key not in _MISSING:
            _MISSING[key] = reason
            logger.warning(reason)


def stlpips_net(device: torch.device | str = "cpu") -> nn.Module | None:
    """The cached ST-LPIPS network on ``device``, or ``None`` (one warning) when unavailable."""
    try:
        return _cached(("stlpips", "alex"), torch.device(device), _build_stlpips)
    except (ImportError, FileNotFoundError) as err:
        _report_missing(("stlpips",), f"ST-LPIPS is reported as missing: {err}")
        return None


def stlpips_status() -> str:
    """'ok' when ST-LPIPS can be built, else 'missing: why' (does not build the network)."""
    try:
        path = _stlpips_weights_file()
    except ImportError as err:
        return f"missing: {err}"
    return "ok" if path.is_file() else f"missing: ST-LPIPS weights not found at {path}"


def stlpips(pred: Tensor, target: Tensor, *, perceptual_size: int = 64) -> Tensor | None:
    """Per-image ST-LPIPS distance (AlexNet, shift-tolerant), shape (B,); 0 for identical images.

    Inputs in [-1, 1] are upsampled to :func:`perceptual_input_hw` first. ``None`` if the
    shipped weights cannot be found.
    """
    _check_pair(pred, target)
    net = stlpips_net(pred.device)
    if net is None:
        return None
    with torch.no_grad():
        a = perceptual_resize(_clamp(pred), perceptual_size)
        b = perceptual_resize(_clamp(target), perceptual_size)
        return net(a, b).reshape(-1)


# --------------------------------------------------------------------------- LPIPS


def lpips_backbone_file(net: str = "alex") -> Path:
    """Where the torchvision ImageNet weights LPIPS needs must be: the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``)."""
    if net not in _LPIPS_BACKBONES:
        raise ConfigError("metrics.lpips_net", f"must be one of {sorted(_LPIPS_BACKBONES)}")
    models = importlib.import_module("torchvision.models")
    url: str = getattr(models, _LPIPS_BACKBONES[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _lpips_missing_reason(net: str, path: Path) -> str:
    arch = {"alex": "alexnet", "vgg": "vgg16"}[net]
    return (
        f"LPIPS ({net}) is reported as missing: ImageNet weights {path.name} not found in "
        f"{path.parent}; put {path.name} in {path.parent} (or point TORCH_HOME at a folder whose "
        f'hub/checkpoints has it), or run once with network: python -c "import torchvision; '
        f"torchvision.models.{arch}(weights='IMAGENET1K_V1')\""
    )


def lpips_status(net: str = "alex") -> str:
    """'ok' when the LPIPS backbone file is present, else 'missing: why' (no network built)."""
    path = lpips_backbone_file(net)
    if path.is_file():
        return "ok"
    return "missing: " + _lpips_missing_reason(net, path).split(": ", 1)[1]


def lpips_net(net: str = "alex", device: torch.device | str = "cpu") -> nn.Module | None:
    """The cached LPIPS network on ``device``, or ``None`` after one warning when the torchvision
    backbone weights are not in the hub cache. Never downloads."""
    path = lpips_backbone_file(net)
    if not path.is_file():
        _report_missing(("lpips", net, str(path)), _lpips_missing_reason(net, path))
        return None
    return _cached(("lpips", net, str(path)), torch.device(device), lambda: _build_lpips(net, path))


def lpips(
    pred: Tensor, target: Tensor, *, net: str = "alex", perceptual_size: int = 64
) -> Tensor | None:
    """Per-image LPIPS v0.1 distance, shape (B,), or ``None`` when its backbone is missing.

    Inputs in [-1, 1] are upsampled to :func:`perceptual_input_hw` first.
    """
    _check_pair(pred, target)
    model = lpips_net(net, pred.device)
    if model is None:
        return None
    with torch.no_grad():
        a = perceptual_resize(_clamp(pred), perceptual_size)
        b = perceptual_resize(_clamp(target), perceptual_size)
        return model(a, b).reshape(-1)


# --------------------------------------------------------------------------- shared features


def perceptual_features(net: nn.Module, images: Tensor, perceptual_size: int) -> list[Tensor]:
    """The unit-normalised backbone features of ``images`` (clamped, resized as the metric
    sees them) that an LPIPS-family ``net`` (ST-LPIPS or LPIPS) compares, one per layer.

    The same arithmetic as the packages' ``LPIPS.forward`` for one input (Zhang et al. 2018,
    eq. 1: ŷ^l normalised in the channel dimension); :func:`perceptual_distance` finishes it.
    """
    x = perceptual_resize(_clamp(images), perceptual_size)
    with torch.no_grad():
        scaling, backbone = net.get_submodule("scaling_layer"), net.get_submodule("net")
        outs = backbone(scaling(x) if getattr(net, "version", None) == "0.1" else x)
        # normalize_tensor of both packages: f / (‖f‖₂ over channels + 1e-10)
        return [f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in outs]


def perceptual_distance(net: nn.Module, feats: Sequence[Tensor], other: Sequence[Tensor]) -> Tensor:
    """Per-image distance (B,) between two :func:`perceptual_features` results: Σ_l of the
    spatial mean of w_l · (ŷ^l − ŷ'^l)² (Zhang et al. 2018, eq. 1), as ``LPIPS.forward``."""
    with torch.no_grad():
        total: Tensor | float = 0.0
        lins = cast("nn.ModuleList", net.get_submodule("lins"))
        for lin, f, g in zip(lins, feats, other, strict=True):
            total = total + lin((f - g) ** 2).mean([2, 3], keepdim=True)
        return torch.as_tensor(total).reshape(-1)


def _perceptual_many(
    net: nn.Module | None, preds: Mapping[str, Tensor], target: Tensor, perceptual_size: int
) -> dict[str, Tensor] | None:
    """The distance of every set in ``preds`` to ``target``, the target's features computed
    once; equal to the per-pair metric (tests/test_metrics.py)."""
    if net is None:
        return None
    target_feats = perceptual_features(net, target, perceptual_size)
    return {
        name: perceptual_distance(net, perceptual_features(net, p, perceptual_size), target_feats)
        for name, p in preds.items()
    }


# --------------------------------------------------------------------------- SWD


def _binomial_kernel(channels: int, device: torch.device) -> Tensor:
    """5-tap binomial [1, 4, 6, 4, 1] / 16 as a separable 2-D Gaussian (Burt & Adelson 1983)."""
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device) / 16.0
    return torch.outer(k1, k1).expand(channels, 1, 5, 5).contiguous()


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def _pyr_down(x: Tensor, kernel: Tensor) -> Tensor:
    return _blur(x, kernel)[..., ::2, ::2]


def _pyr_up(x: Tensor, kernel: Tensor, hw: tuple[int, int]) -> Tensor:
    """Zero insertion to ``hw`` then blur with 4× the kernel (keeps the mean; Burt & Adelson)."""
    up = x.new_zeros(*x.shape[:2], *hw)
    up[..., ::2, ::2] = x
    return _blur(up, 4.0 * kernel)


def laplacian_pyramid(x: Tensor, min_size: int = 16) -> list[Tensor]:
    """Laplacian pyramid of (N, C, H, W): band-pass levels at H, H/2, ... and, last, the low-pass
    residual at the coarsest size whose smaller side is still >= ``min_size`` (Karras et al.
    2018, appendix D: 16 px minimum)."""
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"SWD needs images of at least {min_size} px, got {tuple(x.shape[-2:])}")
    kernel = _binomial_kernel(x.shape[1], x.device)
    levels: list[Tensor] = []
    current = x
    while min(current.shape[-2:]) // 2 >= min_size:
        low = _pyr_down(current, kernel)
        levels.append(current - _pyr_up(low, kernel, (current.shape[-2], current.shape[-1])))
        current = low
    levels.append(current)
    return levels


def _patch_descriptors(level: Tensor, positions: tuple[Tensor, Tensor], patch_size: int) -> Tensor:
    """Patches (N·P, C, patch_size²) at top-left corners ``positions`` = (ys, xs), each (N, P)."""
    n, c, h, w = level.shape
    ys, xs = positions
    offsets = torch.arange(patch_size, device=level.device)
    rows = ys[:, :, None, None] + offsets[None, None, :, None]
    cols = xs[:, :, None, None] + offsets[None, None, None, :]
    flat = (rows * w + cols).reshape(n, 1, -1).expand(n, c, -1)
    patches = level.reshape(n, c, h * w).gather(2, flat)
    p = ys.shape[1]
    return patches.reshape(n, c, p, patch_size * patch_size).transpose(1, 2).reshape(n * p, c, -1)


def _normalize_descriptors(desc: Tensor) -> Tensor:
    """Each colour channel to zero mean and unit std over the set's descriptors (Karras et al.
    2018, appendix D), then flattened to (M, C·patch_size²)."""
    mean = desc.mean(dim=(0, 2), keepdim=True)
    std = desc.std(dim=(0, 2), keepdim=True, unbiased=False).clamp_min(1e-8)
    return ((desc - mean) / std).reshape(desc.shape[0], -1)


@dataclass(frozen=True)
class SWDSettings:
    """SWD's parameters (defaults: Karras et al. 2018, appendix D) and the seed of its draws;
    the ``metrics.swd_*`` keys default to these."""

    #: coarsest Laplacian pyramid level, px
    min_size: int = 16
    #: patch descriptors of patch_size x patch_size px
    patch_size: int = 7
    patches_per_image: int = 128
    #: random projections per repeat
    directions: int = 128
    repeats: int = 4
    seed: int = 0


def _sorted_columns(x: Tensor) -> Tensor:
    """``torch.sort(x, dim=0).values``; on the CPU by NumPy's vectorised sort (x86-simd-sort:
    the same values, about 4x faster than torch's on one core: the sorts dominate SWD)."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return torch.sort(x, dim=0).values
    return torch.from_numpy(np.sort(x.numpy(), axis=0))


def _swd_sets(
    pred_sets: Mapping[str, Tensor], target_set: Tensor, s: SWDSettings, gen: torch.Generator
) -> dict[str, dict[str, float]]:
    """SWD ×1e3 per pyramid level and their mean, for each pred set (all of the target's size)
    against the target: the target's pyramid, descriptors and sorted projections once. Per
    level: patch positions, then ``repeats`` × ``directions`` random unit projections, sorted
    (Rabin et al. 2011: sliced Wasserstein-1 = mean |sorted projection difference|)."""
    min_size, patch_size = s.min_size, s.patch_size
    patches_per_image, directions, repeats = s.patches_per_image, s.directions, s.repeats
    n = len(target_set)
    device = target_set.device
    pyr_b = laplacian_pyramid(_clamp(target_set), min_size)
    pyrs = {k: laplacian_pyramid(_clamp(p.to(device)), min_size) for k, p in pred_sets.items()}
    results: dict[str, dict[str, float]] = {name: {} for name in pred_sets}
    for level, level_b in enumerate(pyr_b):
        h, w = level_b.shape[-2:]
        if min(h, w) < patch_size:
            raise ValueError(f"SWD level of {h}x{w} px is smaller than patch_size {patch_size}")
        ys = torch.randint(0, h - patch_size + 1, (n, patches_per_image), generator=gen)
        xs = torch.randint(0, w - patch_size + 1, (n, patches_per_image), generator=gen)
        pos = (ys.to(device), xs.to(device))
        desc_b = _normalize_descriptors(_patch_descriptors(level_b, pos, patch_size))
        descs = {
            name: _normalize_descriptors(_patch_descriptors(pyr[level], pos, patch_size))
            for name, pyr in pyrs.items()
        }
        dists: dict[str, list[Tensor]] = {name: [] for name in pred_sets}
        for _ in range(repeats):  # the same directions for every set
            dirs = torch.randn(desc_b.shape[1], directions, generator=gen).to(device)
            dirs = dirs / torch.linalg.vector_norm(dirs, dim=0, keepdim=True)
            proj_b = _sorted_columns(desc_b @ dirs)
            for name, desc_a in descs.items():
                proj_a = _sorted_columns(desc_a @ dirs)
                dists[name].append((proj_a - proj_b).abs().mean())
        key = f"swd_{h}" if h == w else f"swd_{h}x{w}"
        for name in pred_sets:
            results[name][key] = 1e3 * float(torch.stack(dists[name]).mean())
    for result in results.values():
        result["swd"] = sum(result.values()) / len(result)
    return results


def sliced_wasserstein(
    pred_set: Tensor, target_set: Tensor, settings: SWDSettings | None = None, /, **keys: int
) -> dict[str, float]:
    """SWD between the Laplacian-pyramid patch distributions of two image sets.

    ``settings`` (:class:`SWDSettings`; keyword arguments replace its keys, e.g. ``seed=1``).
    Karras et al. 2018, "Progressive Growing of GANs", ICLR, §5 and appendix D: per level of
    a Laplacian pyramid (down to ``min_size`` px, the coarsest level being the low-pass
    residual) draw ``patches_per_image`` random 7×7 patches per image, normalise each colour
    channel over each set's descriptors, and compute the sliced Wasserstein distance with
    ``repeats`` × ``directions`` random unit projections (paper: 4 × 128 = 512).

    Values are reported in the paper's ×1e3 convention. Keys: ``swd_{H}`` per level (``swd_{H}x
    {W}`` for non-square images, H the level's height) and ``swd``, their mean. Sets of unequal
    size are subsampled (seeded) to the smaller one. Everything random comes from one generator
    seeded with ``seed``; both sets use the same patch positions (common random numbers: less
    variance, identical sets give exactly 0). Memory: 2 × N × patches_per_image × 147 floats
    per level.
    """
    if pred_set.dim() != 4 or target_set.dim() != 4 or pred_set.shape[1:] != target_set.shape[1:]:
        raise ValueError(
            f"SWD needs two sets (N, C, H, W) of the same image shape, got "
            f"{tuple(pred_set.shape)} and {tuple(target_set.shape)}"
        )
    if len(pred_set) == 0 or len(target_set) == 0:
        raise ValueError("SWD needs non-empty image sets")
    s = dataclasses.replace(settings or SWDSettings(), **keys)
    gen = torch.Generator().manual_seed(s.seed)
    n = min(len(pred_set), len(target_set))
    if len(pred_set) > n:
        pred_set = pred_set[torch.randperm(len(pred_set), generator=gen)[:n].to(pred_set.device)]
    if len(target_set) > n:
        idx = torch.randperm(len(target_set), generator=gen)[:n].to(target_set.device)
        target_set = target_set[idx]
    return _swd_sets({"pred": pred_set}, target_set.to(pred_set.device), s, gen)["pred"]


def sliced_wasserstein_many(
    pred_sets: Mapping[str, Tensor],
    target_set: Tensor,
    settings: SWDSettings | None = None,
    /,
    **keys: int,
) -> dict[str, dict[str, float]]:
    """:func:`sliced_wasserstein` of each of ``pred_sets`` against one ``target_set``, with the
    target's pyramid, patch descriptors and sorted projections computed once (the
    sorts dominate SWD, and every method of a restoration run compares with the same originals).

    Equal to calling :func:`sliced_wasserstein` per set (the same seeded draws in the same
    order: patch positions and directions depend only on the seed and the shapes) when every
    set has the target's size; otherwise it falls back to one call per set.
    """
    s = dataclasses.replace(settings or SWDSettings(), **keys)
    if any(p.shape != target_set.shape for p in pred_sets.values()) or len(target_set) == 0:
        return {name: sliced_wasserstein(p, target_set, s) for name, p in pred_sets.items()}
    return _swd_sets(pred_sets, target_set, s, torch.Generator().manual_seed(s.seed))


# --------------------------------------------------------------------------- summary


def _as_cpu_values(value: Tensor | float) -> Tensor:
    return torch.as_tensor(value).detach().to("cpu", torch.float64).reshape(-1)


def summarize(
    per_image_lists: Sequence[Mapping[str, Tensor]] | Mapping[str, Sequence[Tensor | float]],
    keys: Sequence[str] = PER_IMAGE_KEYS,
) -> dict[str, float | None]:
    """Mean of each per-image metric over all images, JSON-ready.

    ``per_image_lists`` is either a list of :meth:`ImageMetrics.per_image` results (one per
    batch) or a mapping metric -> list of (B,) tensors / floats. Every name in ``keys`` appears
    in the result; a metric with no finite value (missing, skipped) is ``None``. Non-finite
    values are dropped with a warning, so the result never holds NaN or inf.
    """
    collected: dict[str, list[Tensor]] = {}
    if isinstance(per_image_lists, Mapping):
        for name, values in per_image_lists.items():
            collected[name] = [_as_cpu_values(v) for v in values]
    else:
        for batch in per_image_lists:
            for name, value in batch.items():
                collected.setdefault(name, []).append(_as_cpu_values(value))
    out: dict[str, float | None] = {}
    for name in [*keys, *(k for k in collected if k not in keys)]:
        parts = collected.get(name, [])
        every = torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)
        finite = every[torch.isfinite(every)]
        if len(finite) < len(every):
            logger.warning(
                "summarize: dropped %d non-finite %s values", len(every) - len(finite), name
            )
        out[name] = float(finite.mean()) if len(finite) else None
    return out


# --------------------------------------------------------------------------- ImageMetrics


def periodic_energy(x: Tensor, period: int) -> Tensor:
    """Per image (B,): the share of the spectral energy (DC excluded) at the frequencies of a
    pattern repeating every ``period`` pixels (rows or columns of the 2-D FFT at multiples of
    H/period, W/period). A grid pattern of that period raises it far above natural images'.
    """
    h, w = x.shape[-2:]
    if period < 2 or h % period or w % period:
        raise ValueError(f"period must be ≥ 2 and divide {h}x{w}, got {period}")
    power = torch.fft.fft2(x.double() - x.double().mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    rows = torch.zeros(h, dtype=torch.bool, device=x.device)
    cols = torch.zeros(w, dtype=torch.bool, device=x.device)
    rows[:: h // period] = True
    cols[:: w // period] = True
    rows[0] = cols[0] = False  # frequency 0 along one axis: not a pattern of that period
    mask = rows[:, None] | cols[None, :]
    total = power.sum(dim=(-3, -2, -1)).clamp_min(1e-30)
    return (power * mask).sum(dim=(-3, -2, -1)) / total


@dataclass(frozen=True)
class MetricsConfig:
    """The ``metrics`` config group (``conf/metrics/default.yaml``): its keys and defaults, read
    by :func:`~singexp.config.check_schema` like singexp's other groups."""

    #: perceptual metrics see images whose smaller side is at least this (smaller: upsampled)
    perceptual_size: int = 64
    #: LPIPS backbone: alex | vgg
    lpips_net: str = "alex"
    stlpips: bool = True
    lpips: bool = True
    ms_ssim: bool = True
    swd: bool = True
    swd_min_size: int = SWDSettings.min_size
    swd_patch_size: int = SWDSettings.patch_size
    swd_patches_per_image: int = SWDSettings.patches_per_image
    swd_directions: int = SWDSettings.directions
    swd_repeats: int = SWDSettings.repeats
    swd_seed: int = SWDSettings.seed

    def check(self) -> None:
        """Raise a one-line ConfigError naming the first ``metrics.*`` key out of range."""
        if self.perceptual_size < 32:
            raise ConfigError(
                "metrics.perceptual_size", f"must be >= 32, got {self.perceptual_size}"
            )
        if self.lpips_net not in _LPIPS_BACKBONES:
            raise ConfigError(
                "metrics.lpips_net",
                f"must be one of {sorted(_LPIPS_BACKBONES)}, got {self.lpips_net!r}",
            )
        for key in (
            "swd_min_size",
            "swd_patch_size",
            "swd_patches_per_image",
            "swd_directions",
            "swd_repeats",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(
                    f"metrics.{key}", f"must be a positive integer, got {getattr(self, key)}"
                )
        if self.swd_patch_size > self.swd_min_size:
            raise ConfigError("metrics.swd_patch_size", "must not exceed metrics.swd_min_size")


class ImageMetrics:
    """All metrics of one evaluation, configured by ``conf/metrics/default.yaml``
    (:class:`MetricsConfig`).

    ``per_image`` gives (B,) tensors for psnr, ssim, ms_ssim (only when the image size allows),
    stlpips and lpips (only when its backbone weights are present); ``set_level`` gives SWD;
    ``status`` says what is missing or skipped and which perceptual input size was used.
    Build it from a :class:`MetricsConfig`, from the group's keys (``ImageMetrics(lpips=False)``,
    ``hydra.utils.instantiate(cfg.metrics)``) or with :meth:`from_config`; every way checks the
    keys against :class:`MetricsConfig`.
    """

    def __init__(self, config: MetricsConfig | None = None, /, **keys: Any) -> None:
        if config is None or keys:
            base = dataclasses.asdict(config or MetricsConfig())
            config = check_schema("metrics", {**base, **keys}, MetricsConfig)
        config.check()
        self.config = config
        self.perceptual_size = config.perceptual_size
        self.lpips_net = config.lpips_net
        self.enabled = {
            "psnr": True,
            "ssim": True,
            "ms_ssim": config.ms_ssim,
            "stlpips": config.stlpips,
            "lpips": config.lpips,
            "swd": config.swd,
        }
        self.swd = SWDSettings(  # the metrics.swd_* keys
            **{f.name: getattr(config, f"swd_{f.name}") for f in dataclasses.fields(SWDSettings)}
        )
        self.device = torch.device("cpu")
        #: (H, W) of the last per_image inputs and what the perceptual metrics saw
        self.input_hw: tuple[int, int] | None = None
        self.perceptual_hw: tuple[int, int] | None = None
        self._swd_skipped: str | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ImageMetrics:
        """Build from the ``metrics`` config group (``_target_`` ignored); unknown keys fail."""
        keys = {str(k): cfg[k] for k in cfg if k != "_target_"}
        return cls(check_schema("metrics", keys, MetricsConfig))

    def to(self, device: torch.device | str) -> ImageMetrics:
        """Compute on ``device`` (inputs are moved there); networks load lazily on first use."""
        self.device = torch.device(device)
        return self

    def per_image(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Per-image metrics, each (B,) on ``self.device``; absent keys are skipped or missing."""
        return self.per_image_many({"pred": pred}, target)["pred"]

    def per_image_many(
        self, preds: Mapping[str, Tensor], target: Tensor
    ) -> dict[str, dict[str, Tensor]]:
        """:meth:`per_image` of every set in ``preds`` against one ``target`` batch, the
        target's ST-LPIPS/LPIPS features computed once and shared (equal values)."""
        for pred in preds.values():
            _check_pair(pred, target)
        target = target.detach().to(self.device)
        moved = {name: p.detach().to(self.device) for name, p in preds.items()}
        h, w = target.shape[-2:]
        self.input_hw = (h, w)
        self.perceptual_hw = perceptual_input_hw(h, w, self.perceptual_size)
        out: dict[str, dict[str, Tensor]] = {
            name: {"psnr": psnr(p, target), "ssim": ssim(p, target)} for name, p in moved.items()
        }
        if self.enabled["ms_ssim"]:
            for name, p in moved.items():
                value = ms_ssim(p, target)
                if value is not None:
                    out[name]["ms_ssim"] = value
        size = self.perceptual_size
        perceptual = {
            "stlpips": lambda: stlpips_net(self.device),
            "lpips": lambda: lpips_net(self.lpips_net, self.device),
        }
        for key, net in perceptual.items():
            if self.enabled[key]:
                values = _perceptual_many(net(), moved, target, size)
                for name, value in (values or {}).items():
                    out[name][key] = value
        return out

    def set_level(
        self, pred_set: Tensor | Sequence[Tensor], target_set: Tensor | Sequence[Tensor]
    ) -> dict[str, float]:
        """Set-level metrics (SWD, ×1e3) between two image sets (tensors or lists of batches).

        Empty when SWD is disabled or the images are smaller than ``swd_min_size``.
        """
        a = pred_set if isinstance(pred_set, Tensor) else torch.cat(list(pred_set))
        b = target_set if isinstance(target_set, Tensor) else torch.cat(list(target_set))
        return self.set_level_many({"pred": a}, b)["pred"]

    def set_level_many(
        self, pred_sets: Mapping[str, Tensor], target_set: Tensor
    ) -> dict[str, dict[str, float]]:
        """:meth:`set_level` of every set in ``pred_sets`` against one target set, the target's
        share of the work done once (:func:`sliced_wasserstein_many`); equal values."""
        if not self.enabled["swd"]:
            return {name: {} for name in pred_sets}
        size = min(target_set.shape[-2:])
        if size < self.swd.min_size:
            self._swd_skipped = f"skipped: image size {size} < {self.swd.min_size}"
            return {name: {} for name in pred_sets}
        self._swd_skipped = None
        return sliced_wasserstein_many(
            {name: p.to(self.device) for name, p in pred_sets.items()},
            target_set.to(self.device),
            self.swd,
        )

    def status(self) -> dict[str, str]:
        """Per metric 'ok', 'disabled', 'missing: ...', 'skipped: ...' or 'pending: ...', and
        ``perceptual_size``: the input size the perceptual metrics use(d)."""
        out: dict[str, str] = {"psnr": "ok", "ssim": "ok"}
        if not self.enabled["ms_ssim"]:
            out["ms_ssim"] = "disabled"
        elif self.input_hw is None:
            out["ms_ssim"] = f"pending: needs images of at least {MS_SSIM_MIN_SIZE} px"
        elif ms_ssim_supported(self.input_hw):
            out["ms_ssim"] = "ok"
        else:
            out["ms_ssim"] = f"skipped: image size {min(self.input_hw)} < {MS_SSIM_MIN_SIZE}"
        out["stlpips"] = stlpips_status() if self.enabled["stlpips"] else "disabled"
        out["lpips"] = lpips_status(self.lpips_net) if self.enabled["lpips"] else "disabled"
        out["swd"] = "disabled" if not self.enabled["swd"] else (self._swd_skipped or "ok")
        if self.input_hw is None or self.perceptual_hw is None:
            out["perceptual_size"] = f"{self.perceptual_size} (smaller inputs upsampled)"
        elif self.perceptual_hw == self.input_hw:
            out["perceptual_size"] = "{}x{} (native)".format(*self.input_hw)
        else:
            out["perceptual_size"] = "{}x{} (bilinear upsampling from {}x{})".format(
                *self.perceptual_hw, *self.input_hw
            )
        return out

    def summarize(
        self,
        per_image_lists: Sequence[Mapping[str, Tensor]] | Mapping[str, Sequence[Tensor | float]],
    ) -> dict[str, float | None]:
        """:func:`summarize` over this object's per-image keys (lpips included even if missing)."""
        return summarize(per_image_lists, PER_IMAGE_KEYS)


__all__ = [
    "MS_SSIM_MIN_SIZE",
    "PER_IMAGE_KEYS",
    "PSNR_MAX_DB",
    "ImageMetrics",
    "MetricsConfig",
    "SWDSettings",
    "laplacian_pyramid",
    "lpips",
    "lpips_backbone_file",
    "lpips_net",
    "lpips_status",
    "ms_ssim",
    "ms_ssim_supported",
    "perceptual_distance",
    "perceptual_features",
    "perceptual_input_hw",
    "perceptual_resize",
    "periodic_energy",
    "psnr",
    "psnr_from_mse",
    "sliced_wasserstein",
    "sliced_wasserstein_many",
    "ssim",
    "stlpips",
    "stlpips_net",
    "stlpips_status",
    "summarize",
]
