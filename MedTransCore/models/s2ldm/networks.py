"""The S2LDM networks and losses (seed paper 004: similarity-aware syncretic latent diffusion, NCCT -> CECT).

S2LDM is a latent diffusion model in two stages, built here from the ``aldm`` parts:

1. a **syncretic** VQ autoencoder (``aldm``'s :func:`~MedTransCore.models.aldm.networks.build_autoencoder`,
   wrapped in :class:`SyncreticAutoencoder`);
2. a latent diffusion UNet (``aldm``'s :class:`~MedTransCore.models.aldm.networks.ConditionedDiffusionUNet`
   with ``condition_channels = latent_channels``, wrapped in :class:`SimilarityGuidedUNet`) that predicts the noise
   of the contrast-enhanced (CECT) latent from the non-contrast (NCCT) latent multiplied by a similarity mask, and
   from the target phase (arterial or venous) as ``aldm``'s class / FiLM conditioning.

What makes the autoencoder *syncretic* rather than ``aldm``'s plain shared autoencoder (which reconstructs every
image of every modality on its own): the encoder is applied as two weight-sharing branches (a Siamese pair, after
SimSiam, the paper's ref. [3]) to the NCCT and the CECT image *of the same case* in one pass; the two embeddings
are tied by the adaptive similarity loss (Eq. 1); and the decoder is a CECT decoder: it reconstructs the
high-frequency-enhanced CECT only (Eq. 2), never the NCCT. At inference only the NCCT is encoded.

Equations 1-4 are missing from the seed's text; they are reconstructed from its prose as follows.

**Feature-wise similarity.** ``s_i = cos(z_nc[:, i], z_ce[:, i])``: the cosine, across latent channels, of the two
embeddings at latent voxel ``i`` (:func:`feature_similarity`), in ``[-1, 1]``; ``S = {s_i}``.

**Eq. 1, adaptive similarity loss** (focal loss modified to weigh dissimilar, i.e. contrast-enhanced, features
more): ``L_sim = sum_i w_i (1 - s_i)`` with ``w_i = (1 - s_i)^gamma / sum_j (1 - s_j)^gamma``, per image pair,
averaged over the batch (:func:`adaptive_similarity_loss`). Choices: the prose names two elements of ``S`` (their
symbols are lost; read here as ``s_i`` and ``s_j``) and a constant ``gamma`` "to assign adaptive weights", so the
weights are focal terms normalised over the set; ``1 - s`` (SimSiam's negative cosine, shifted to be 0 for identical features) is the per-feature loss;
the weights are constants of the gradient (stop-gradient), so each step only raises similarity, most where it is
lowest; ``gamma = 2`` (focal loss's default; the paper's value is lost); ``gamma = 0`` is the plain mean
``1 - cos``. It acts on the encoder outputs before quantisation (the VQ codes pass no useful gradient) and has no
SimSiam predictor (the reconstruction loss already prevents a collapse).

**High-frequency enhancement** of the reconstruction target: unsharp masking,
``x~ = x + alpha (x - G_sigma * x)`` with a Gaussian blur ``G_sigma`` (``sigma`` in voxels, replicate padding)
(:func:`high_frequency_enhance`), i.e. a high-frequency emphasis filter ``1 + alpha (1 - exp(-sigma^2 w^2 / 2))``:
the zero frequency (the mean, flat regions) is kept, edges and fine detail are amplified up to ``1 + alpha``.
Choices: ``alpha = 0.5``, ``sigma = 1`` voxel (the paper gives no filter); no clipping (the overshoot at edges is
the point); ``alpha = 0`` switches it off.

**Eq. 2, autoencoder loss** (VQ-GAN): ``L_AE = L_rec(D(q(E(x_ce))), x~_ce) + l1 L_q + l2 L_adv + l3 L_sim``, with
``L_rec`` ``aldm``'s body-weighted L1 (+ optional 3D SSIM), ``L_q`` the VQ commitment loss of *both* embeddings
(the NCCT codes are the diffusion's condition), ``L_adv`` ``aldm``'s optional LSGAN patch loss (the enhanced
target is the "real" image) and ``l3 = 0.1`` (the paper's weights are lost).

**Eq. 3, dynamic similarity mask** at training progress ``p = e / E`` (epoch over total; here step over
``train.steps``): ``M_p = S' + (1 - S') p^k`` with ``S'`` the similarity rescaled to ``[0, 1]``, broadcast over
the latent channels (the mask has the embeddings' shape), and ``k = 2`` (:func:`similarity_mask`). Choices: the
prose says the mask moves the model from "large and high-similarity regions" early to "small and low-similarity
regions" later, that ``k`` controls the rate of change, and that inference uses an all-ones mask; so the mask
starts as the similarity itself (``p = 0``: the condition keeps the anatomy both phases share and damps the
enhanced regions) and relaxes to all ones (``p = 1``: the whole NCCT latent, as at inference) along ``p^k``: with
``k = 2`` it stays close to the similarity for the first part of training. ``s`` comes from the frozen encoder's
quantised latents of the pair (the ones the diffusion sees). Rescaling (``scaling``): ``"minmax"`` (the default),
``S' = (s - min s) / (max s - min s)`` over each pair's latent voxels (all ones when they are all equal), or
``"cosine"``, ``S' = (1 + s) / 2``. Measured on a 400-step abdomen autoencoder, the cosines of the quantised
latents of an NCCT/CECT pair all lie in ``[0.93, 1]`` (the latents share one dominant direction), so ``(1 + s) / 2``
never drops below 0.96 and the mask, and its ablation, would do nothing; min-max keeps the ranking (its
correlation with the local enhancement was 0.3-0.4, as the raw cosine's) over the whole ``[0, 1]``.

**Eq. 4, diffusion objective** (LDM with the mask as "feature-wise multiplication" at the beginning of diffusion):
``L_LDM = E_{z_ce, z_nc, eps ~ N(0, I), t ~ U{1..T}} || eps - eps_theta(z_t, t, M_p (.) z_nc, y) ||^2``, with
``z_t = sqrt(a_t) z_ce + sqrt(1 - a_t) eps`` and ``y`` the target phase. Inference: ``M = 1``, so the condition is
the NCCT latent alone. Choice: the mask multiplies the condition, not the loss (an all-ones mask at inference is
only meaningful on an input). :class:`SimilarityGuidedUNet` takes ``[z_nc, M]`` (``2C`` channels, what ``aldm``'s
samplers expect of a condition) and applies the product itself.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..aldm.networks import (
    ConditionedDiffusionUNet,
    LatentAutoencoder,
    build_autoencoder,
    build_diffusion_unet,
)

#: Eq. 1's focusing constant and the weight of ``L_sim`` in Eq. 2.
SIMILARITY_DEFAULTS: dict[str, float] = {"similarity": 0.1, "similarity_gamma": 2.0}
#: Unsharp masking of the reconstruction target: gain of the high frequencies and the blur's sigma (voxels).
HIGH_FREQUENCY_DEFAULTS: dict[str, float] = {"alpha": 0.5, "sigma": 1.0}
#: Eq. 3: ``enabled: false`` is the ablation without the mask (an all-ones mask throughout training).
MASK_DEFAULTS: dict[str, Any] = {"enabled": True, "exponent": 2.0, "scaling": "minmax"}
#: How a similarity becomes the mask's starting value ``S'`` in ``[0, 1]`` (see the module docstring).
MASK_SCALINGS = ("minmax", "cosine")
#: What the diffusion UNet predicts (:class:`SimilarityGuidedUNet`): the noise (the paper) or the latent enhancement.
PREDICTIONS = ("epsilon", "residual")


def feature_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of two embeddings across channels, voxel by voxel.

    Args:
        a, b: ``(B, C, z, y, x)`` embeddings of the same shape.
        eps: floor of each vector's norm (an all-zero vector has similarity 0 with anything).

    Returns:
        ``(B, 1, z, y, x)`` similarities in ``[-1, 1]``.
    """
    if a.shape != b.shape:
        raise ValueError(f"embeddings of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    return F.cosine_similarity(a, b, dim=1, eps=eps).unsqueeze(1)


def adaptive_similarity_loss(a: torch.Tensor, b: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Eq. 1: ``sum_i w_i (1 - s_i)``, ``w_i = (1 - s_i)^gamma / sum_j (1 - s_j)^gamma`` (weights without gradient).

    Args:
        a, b: ``(B, C, z, y, x)`` NCCT and CECT embeddings of the same cases.
        gamma: focusing constant (``0``: the plain mean of ``1 - cos``).

    Returns:
        scalar in ``[0, 2]``, 0 when every feature pair points the same way; the mean over the batch of each pair's
        weighted sum.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    dissimilarity = 1.0 - feature_similarity(a.float(), b.float()).flatten(1)
    weights = dissimilarity.detach().clamp_min(0.0).pow(gamma) + 1e-12  # all-similar pairs: uniform weights
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (weights * dissimilarity).sum(dim=1).mean()


def mask_schedule(progress: float, exponent: float = 2.0) -> float:
    """How far the mask has relaxed towards all ones: ``p^k`` (0 at the start of training, 1 at its end)."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"training progress must be in [0, 1], got {progress}")
    if exponent <= 0:
        raise ValueError(f"the mask exponent must be positive, got {exponent}")
    return float(progress) ** float(exponent)


def rescaled_similarity(similarity: torch.Tensor, scaling: str = "minmax") -> torch.Tensor:
    """``S'``: similarities mapped to ``[0, 1]``, item by item.

    Args:
        similarity: ``(B, 1, z, y, x)`` cosine similarities.
        scaling: ``"minmax"``: ``(s - min) / (max - min)`` over each item's voxels (ones where all are equal);
            ``"cosine"``: ``(1 + s) / 2``.
    """
    if scaling == "cosine":
        return ((1.0 + similarity) / 2.0).clamp(0.0, 1.0)
    if scaling != "minmax":
        raise ValueError(f"the mask scaling must be one of {MASK_SCALINGS}, got {scaling!r}")
    flat = similarity.flatten(1)
    shape = (-1,) + (1,) * (similarity.ndim - 1)
    low, high = flat.min(dim=1).values.view(shape), flat.max(dim=1).values.view(shape)
    span = high - low
    flat_item = span <= 1e-6
    return torch.where(flat_item, torch.ones_like(similarity), (similarity - low) / torch.where(flat_item, 1.0, span))


def similarity_mask(
    similarity: torch.Tensor, progress: float | None, exponent: float = 2.0, scaling: str = "minmax"
) -> torch.Tensor:
    """Eq. 3: the dynamic similarity mask ``S' + (1 - S') p^k`` (``S'``: :func:`rescaled_similarity`).

    Args:
        similarity: ``(B, 1, z, y, x)`` cosine similarities (:func:`feature_similarity`).
        progress: training progress ``p`` in ``[0, 1]``; ``None`` means inference (all ones).
        exponent: ``k``, the rate of change.
        scaling: how ``S'`` is made from the similarity (:data:`MASK_SCALINGS`).

    Returns:
        ``(B, 1, z, y, x)`` mask values in ``[0, 1]`` (broadcast it over the latent channels).
    """
    if progress is None:
        return torch.ones_like(similarity)
    base = rescaled_similarity(similarity, scaling)
    return base + (1.0 - base) * mask_schedule(progress, exponent)


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable 3D Gaussian blur with replicate padding (a constant image stays exactly constant).

    Args:
        x: ``(B, C, Z, Y, X)``.
        sigma: standard deviation in voxels (> 0).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    kernel = _gaussian_kernel(sigma, x.dtype, x.device)
    radius = kernel.numel() // 2
    b, c = x.shape[:2]
    out = x.reshape(b * c, 1, *x.shape[2:])
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pads = [0] * 6
        pads[2 * (2 - axis)] = pads[2 * (2 - axis) + 1] = radius  # F.pad lists the last axis first
        out = F.conv3d(F.pad(out, pads, mode="replicate"), kernel.view(shape))
    return out.reshape(x.shape)


def high_frequency_enhance(x: torch.Tensor, alpha: float = 0.5, sigma: float = 1.0) -> torch.Tensor:
    """The reconstruction target of Eq. 2: unsharp masking ``x + alpha (x - G_sigma * x)``.

    Args:
        x: ``(B, C, Z, Y, X)`` normalised images.
        alpha: gain of the high frequencies (``0``: ``x`` unchanged).
        sigma: Gaussian sigma in voxels: the scale below which detail is amplified.

    Returns:
        a tensor of ``x``'s shape with the same mean in flat regions and sharper, overshooting edges.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if alpha == 0:
        return x
    return x + alpha * (x - gaussian_blur(x, sigma))


class SyncreticOutput(NamedTuple):
    """What one syncretic training pass gives (see :meth:`SyncreticAutoencoder.syncretic`)."""

    #: ``(B, 1, Z, Y, X)`` the CECT decoded from its own quantised embedding.
    reconstruction: torch.Tensor
    #: scalar: VQ commitment loss (KL divergence for ``kind="kl"``) over both embeddings.
    regularisation: torch.Tensor
    #: ``(B, C, z, y, x)`` NCCT embedding before quantisation (the VQ encoder output; KL: the mean).
    source_features: torch.Tensor
    #: ``(B, C, z, y, x)`` CECT embedding before quantisation.
    target_features: torch.Tensor


class SyncreticAutoencoder(LatentAutoencoder):
    """``aldm``'s autoencoder with a syncretic training pass: one encoder, two weight-sharing branches.

    It has exactly the parameters (and state-dict keys) of the :class:`LatentAutoencoder` it wraps, so its weights
    load into a plain one for inference, where only the NCCT is encoded.
    """

    @classmethod
    def from_autoencoder(cls, autoencoder: LatentAutoencoder) -> SyncreticAutoencoder:
        """The same modules (shared, not copied) with the syncretic pass."""
        return cls(autoencoder.kind, autoencoder.net, autoencoder.latent_channels, autoencoder.downsample_factor)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, Z, Y, X)`` images -> ``(B, C, z, y, x)`` embeddings before quantisation (KL: the mean)."""
        return self.net.encode(x) if self.kind == "vq" else self.net.encode(x)[0]

    def forward(self, x: torch.Tensor, partner: torch.Tensor | None = None) -> Any:
        """``forward(x)``: :meth:`LatentAutoencoder.forward`; ``forward(source, target)``: :meth:`syncretic`.

        Training calls it through ``forward`` so that DDP sees the whole pass.
        """
        if partner is None:
            return super().forward(x)
        return self.syncretic(x, partner)

    def syncretic(self, source: torch.Tensor, target: torch.Tensor) -> SyncreticOutput:
        """Encode an NCCT/CECT pair with the shared encoder and decode the CECT.

        Args:
            source: ``(B, 1, Z, Y, X)`` NCCT images.
            target: ``(B, 1, Z, Y, X)`` CECT images of the same cases.

        Returns:
            the :class:`SyncreticOutput` (the CECT reconstruction, the regularisation over both embeddings and
            both embeddings before quantisation).
        """
        if source.shape != target.shape:
            raise ValueError(f"a pair must have one shape, got {tuple(source.shape)} and {tuple(target.shape)}")
        n = source.shape[0]
        images = torch.cat([source, target])
        if self.kind == "vq":
            features = self.net.encode(images)
            quantised, regularisation = self.net.quantize(features)
            reconstruction = self.net.decode(quantised[n:])
        else:
            features, sigma = self.net.encode(images)
            latent = self.net.sampling(features, sigma)
            reconstruction = self.net.decode(latent[n:])
            kl = 0.5 * (features.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1.0)
            regularisation = kl.mean()
        return SyncreticOutput(reconstruction, regularisation, features[:n], features[n:])


def build_syncretic_autoencoder(kind: str = "vq", **cfg: Any) -> SyncreticAutoencoder:
    """:func:`~MedTransCore.models.aldm.networks.build_autoencoder` with the syncretic pass (same keywords)."""
    return SyncreticAutoencoder.from_autoencoder(build_autoencoder(kind, **cfg))


class SimilarityGuidedUNet(nn.Module):
    """Eq. 4's noise predictor ``eps(z_t, t | M (.) z_nc, target phase)``.

    Args:
        denoiser: ``aldm``'s :class:`ConditionedDiffusionUNet` with ``condition_channels == latent_channels``.

    The condition it takes is ``[z_nc, M]`` (``2C`` channels): the NCCT latent and the similarity mask of the same
    shape (all ones at inference), the form ``aldm``'s samplers expect of a condition.

    ``prediction`` (see :data:`PREDICTIONS`) is what the denoiser's output means:

    * ``"epsilon"`` (the paper's LDM): the noise itself;
    * ``"residual"``: the clean CECT latent minus the (masked) NCCT latent, ``x0 = M (.) z_nc + out``, returned
      as the noise ``(z_t - sqrt(a_t) x0) / sqrt(1 - a_t)`` so every sampler runs unchanged (``output="x0"`` gives
      ``x0`` for the training loss). The denoiser's last layer starts at zero (MONAI), so an untrained network
      already returns the NCCT latent; training learns only the enhancement. Measured on the abdomen phantom:
      after the syncretic autoencoder the two phases' scaled latents differ by an L1 of 0.02, and an epsilon
      network after 1,200 CPU steps sampled latents 2.5 away (every sample worse than the NCCT as is).
      Needs the noise schedule (:meth:`set_schedule`).

    Args:
        denoiser: ``aldm``'s :class:`ConditionedDiffusionUNet` with ``condition_channels == latent_channels``.
        prediction: ``"epsilon"`` or ``"residual"``.
    """

    def __init__(self, denoiser: ConditionedDiffusionUNet, prediction: str = "epsilon") -> None:
        super().__init__()
        if denoiser.condition_channels != denoiser.latent_channels:
            raise ValueError(
                f"the denoiser must take one latent as condition ({denoiser.latent_channels} channels), "
                f"it takes {denoiser.condition_channels}"
            )
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.denoiser = denoiser
        self.prediction = prediction
        self.register_buffer("alphas_cumprod", torch.empty(0), persistent=False)

    def set_schedule(self, alphas_cumprod: torch.Tensor) -> None:
        """The ``(T,)`` cumulative alphas of the noise schedule (a ``"residual"`` network turns x0 into noise)."""
        self.alphas_cumprod = alphas_cumprod.detach().to(self.alphas_cumprod.device, torch.float64)

    @property
    def latent_channels(self) -> int:
        return self.denoiser.latent_channels

    @property
    def num_modalities(self) -> int:
        return self.denoiser.num_modalities

    @property
    def divisor(self) -> int:
        """Latent sizes are padded to a multiple of this (the UNet's total down-sampling)."""
        return self.denoiser.divisor

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor,
        target_index: torch.Tensor,
        output: str = "epsilon",
    ) -> torch.Tensor:
        """Predict the noise (or, ``output="x0"`` of a ``"residual"`` network, the clean latent).

        Args:
            noisy: ``(B, C, z, y, x)`` noisy CECT latent.
            timesteps: ``(B,)`` int64 diffusion timesteps.
            condition: ``(B, 2C, z, y, x)``: the NCCT latent, then the similarity mask (see :func:`guidance`).
            target_index: ``(B,)`` int64 target modality (phase) indices.
            output: ``"epsilon"`` or ``"x0"``.

        Returns:
            ``(B, C, z, y, x)`` predicted noise (or clean latent).
        """
        if condition.shape[1] != 2 * self.latent_channels:
            raise ValueError(
                f"the condition must hold the NCCT latent and its mask ({2 * self.latent_channels} channels), "
                f"got {condition.shape[1]}"
            )
        latent, mask = condition.chunk(2, dim=1)
        out = self.denoiser(noisy, timesteps, latent * mask, target_index)
        if self.prediction == "epsilon":
            if output != "epsilon":
                raise ValueError("an epsilon network predicts the noise only")
            return out
        x0 = latent * mask + out
        if output == "x0":
            return x0
        if self.alphas_cumprod.numel() == 0:
            raise RuntimeError("a residual network needs its noise schedule: call set_schedule() first")
        a = self.alphas_cumprod[timesteps].to(noisy.dtype).view(-1, *([1] * (noisy.ndim - 1)))
        return (noisy - a.sqrt() * x0) / (1.0 - a).sqrt()


def guidance(latent: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The condition of :class:`SimilarityGuidedUNet`: ``[latent, mask]`` along channels.

    Args:
        latent: ``(B, C, z, y, x)`` (scaled) NCCT latent.
        mask: ``(B, 1 or C, z, y, x)`` similarity mask; ``None``: all ones (inference).
    """
    mask = torch.ones_like(latent) if mask is None else mask.expand_as(latent).to(latent.dtype)
    return torch.cat([latent, mask], dim=1)


def build_diffusion(
    *, latent_channels: int, num_modalities: int, prediction: str = "epsilon", **cfg: Any
) -> SimilarityGuidedUNet:
    """The S2LDM UNet: ``aldm``'s diffusion UNet on ``[z_t, M (.) z_nc]`` (``2C`` input channels).

    Args:
        latent_channels: channels of the autoencoder latent.
        num_modalities: width of the target conditioning (the run's modalities; the phases are among them).
        prediction: what the denoiser predicts (:class:`SimilarityGuidedUNet`).
        cfg: the keywords of :func:`~MedTransCore.models.aldm.networks.build_diffusion_unet` (``conditioning``
            and MONAI ``DiffusionModelUNet`` keywords).

    Raises:
        ValueError: an invalid configuration.
    """
    return SimilarityGuidedUNet(
        build_diffusion_unet(
            latent_channels=latent_channels,
            num_modalities=num_modalities,
            condition_channels=latent_channels,
            **cfg,
        ),
        prediction=prediction,
    )


def build_networks(network: dict[str, Any]) -> tuple[LatentAutoencoder, SimilarityGuidedUNet]:
    """Both parts from a bundle's ``metadata["network"]``.

    Args:
        network: ``{"modalities": [...], "autoencoder": {"kind": ..., ...}, "diffusion": {...}}``; ``modalities``
            orders the target conditioning (class index = position).

    Raises:
        ValueError: a missing part or an invalid configuration.
    """
    missing = [k for k in ("modalities", "autoencoder", "diffusion") if k not in network]
    if missing:
        raise ValueError(f"s2ldm network config lacks {missing}")
    autoencoder_cfg = dict(network["autoencoder"])
    autoencoder = build_autoencoder(autoencoder_cfg.pop("kind", "vq"), **autoencoder_cfg)
    diffusion = build_diffusion(
        latent_channels=autoencoder.latent_channels,
        num_modalities=len(network["modalities"]),
        **network["diffusion"],
    )
    return autoencoder, diffusion
