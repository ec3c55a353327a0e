"""Builders of the three ALDM networks from explicit keyword configurations.

Every builder merges the caller's keywords over small, CPU-friendly defaults, rejects unknown keys and
inconsistent values with ``ValueError`` (MONAI style), and the ``resolve_*`` functions return the complete
configuration, which training stores verbatim in the bundle's ``metadata["network"]`` so inference rebuilds
exactly the same modules.

* autoencoder: MONAI ``VQVAE`` (``kind="vq"``, the paper's choice) or ``AutoencoderKL`` (``kind="kl"``),
  wrapped in :class:`LatentAutoencoder` so both expose ``encode`` (deterministic latent), ``decode`` and a
  training ``forward`` returning the regularisation loss (VQ commitment / KL divergence).
* MS-SPADE: see :mod:`MedTransCore.models.aldm.spade`.
* diffusion: MONAI ``DiffusionModelUNet`` wrapped in :class:`ConditionedDiffusionUNet`, whose input is the
  noisy target latent and a condition concatenated along channels: for ALDM the source latent and SPADE(source
  latent) (as in the released ALDM code; ``condition_channels`` = 2 x latent channels, the default), for other
  families whatever they condition on (``s2ldm``: the masked source latent), conditioned on the target modality by a class embedding (``"film"``, the default: also
  a scale-shift of every resnet block's normalised activations, see :mod:`.film`; ``"class"``: added to the
  time embedding only) and/or cross-attention on its one-hot vector.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import VQVAE, AutoencoderKL, DiffusionModelUNet
from torch import nn

from .film import add_scale_shift_norms
from .spade import MSSPADE

AUTOENCODER_KINDS = ("vq", "kl")
CONDITIONING_MODES = ("film", "class", "crossattn", "both")
#: Modes that give the UNet a class embedding (``num_class_embeds``).
_CLASS_MODES = ("film", "class", "both")
# Defaults measured on a 2-core CPU: a 128^3 volume encodes in < 1 s and decodes in ~1 s with the VQ default.
AUTOENCODER_DEFAULTS: dict[str, dict[str, Any]] = {
    "vq": {
        "channels": [32, 64],
        "num_res_layers": 1,
        "num_res_channels": [32, 64],
        "downsample_parameters": [[2, 4, 1, 1], [2, 4, 1, 1]],
        "upsample_parameters": [[2, 4, 1, 1, 0], [2, 4, 1, 1, 0]],
        "num_embeddings": 512,
        "embedding_dim": 4,
        "commitment_cost": 0.25,
        "decay": 0.99,
    },
    "kl": {
        "channels": [16, 32, 32],
        "num_res_blocks": 1,
        "attention_levels": [False, False, False],
        "latent_channels": 4,
        "norm_num_groups": 8,
        "with_encoder_nonlocal_attn": False,
        "with_decoder_nonlocal_attn": False,
        "use_convtranspose": True,
    },
}
DIFFUSION_DEFAULTS: dict[str, Any] = {
    "channels": [32, 64, 64],
    "attention_levels": [False, False, False],
    "num_res_blocks": 1,
    "norm_num_groups": 16,
    "num_head_channels": 16,
    # "class" (the shipped phantom-head-aldm 0.1) only adds the label before a GroupNorm, which removes the
    # part common to a group's channels; "film" also scales and shifts the normalised activations.
    "conditioning": "film",
}
# Keywords the builders set themselves (a config may not override them).
_FIXED_AUTOENCODER_KEYS = {"spatial_dims", "in_channels", "out_channels"}


def _check_keys(cfg: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"{what}: unknown keyword(s) {unknown}; allowed: {sorted(allowed)}")


def _monai_keywords(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def resolve_autoencoder_config(kind: str = "vq", **cfg: Any) -> dict[str, Any]:
    """The complete autoencoder configuration: ``{"kind": kind, **defaults, **cfg}``.

    Raises:
        ValueError: unknown kind or keyword.
    """
    if kind not in AUTOENCODER_KINDS:
        raise ValueError(f"autoencoder kind must be one of {AUTOENCODER_KINDS}, got {kind!r}")
    cls = VQVAE if kind == "vq" else AutoencoderKL
    _check_keys(cfg, _monai_keywords(cls) - _FIXED_AUTOENCODER_KEYS, f"{kind} autoencoder")
    return {"kind": kind, **AUTOENCODER_DEFAULTS[kind], **cfg}


class LatentAutoencoder(nn.Module):
    """A VQ or KL autoencoder with one interface for the ALDM stages.

    Args:
        kind: ``"vq"`` or ``"kl"``.
        net: the MONAI ``VQVAE`` or ``AutoencoderKL``.
        latent_channels: channels of the latent.
        downsample_factor: spatial down-sampling per axis (inputs are padded to a multiple of it).
    """

    def __init__(self, kind: str, net: nn.Module, latent_channels: int, downsample_factor: int) -> None:
        super().__init__()
        self.kind = kind
        self.net = net
        self.latent_channels = latent_channels
        self.downsample_factor = downsample_factor

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, Z, Y, X)`` image -> ``(B, C, Z/f, Y/f, X/f)`` latent (VQ: quantised codes; KL: the mean)."""
        if self.kind == "vq":
            return self.net.encode_stage_2_inputs(x)
        return self.net.encode(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, C, z, y, x)`` latent -> ``(B, 1, f*z, f*y, f*x)`` image (VQ latents are snapped to the codebook)."""
        if self.kind == "vq":
            return self.net.decode_stage_2_outputs(z)
        return self.net.decode(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass.

        Returns:
            the ``(B, 1, Z, Y, X)`` reconstruction and the scalar regularisation loss (VQ commitment loss or the
            KL divergence to a unit Gaussian, averaged over latent voxels).
        """
        if self.kind == "vq":
            return self.net(x)
        recon, mu, sigma = self.net(x)
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1.0)
        return recon, kl.mean()


def build_autoencoder(kind: str = "vq", **cfg: Any) -> LatentAutoencoder:
    """Build the shared autoencoder of all modalities.

    Args:
        kind: ``"vq"`` (MONAI ``VQVAE``) or ``"kl"`` (MONAI ``AutoencoderKL``).
        cfg: keyword arguments of the MONAI class (``spatial_dims``/``in_channels``/``out_channels`` are fixed to
            3/1/1), merged over :data:`AUTOENCODER_DEFAULTS`.

    Raises:
        ValueError: unknown kind or keyword, or a configuration MONAI rejects.
    """
    full = resolve_autoencoder_config(kind, **cfg)
    full.pop("kind")
    try:
        if kind == "vq":
            net = VQVAE(spatial_dims=3, in_channels=1, out_channels=1, **full)
            latent, factor = full["embedding_dim"], math.prod(p[0] for p in full["downsample_parameters"])
        else:
            net = AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, **full)
            latent, factor = full["latent_channels"], 2 ** (len(full["channels"]) - 1)
    except TypeError as exc:  # a wrongly typed value that MONAI does not check itself
        raise ValueError(f"{kind} autoencoder: {exc}") from exc
    return LatentAutoencoder(kind, net, latent_channels=latent, downsample_factor=factor)


def resolve_spade_config(**cfg: Any) -> dict[str, Any]:
    """The complete MS-SPADE configuration (the defaults of :class:`MSSPADE` overridden by ``cfg``)."""
    params = inspect.signature(MSSPADE.__init__).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    _check_keys(cfg, set(defaults), "spade")
    return {**defaults, **cfg}


def build_spade(*, latent_channels: int, modalities: list[str], **cfg: Any) -> MSSPADE:
    """Build the MS-SPADE block.

    Args:
        latent_channels: channels of the autoencoder latent.
        modalities: target modality keys (one modulation parameter set each).
        cfg: the other keywords of :class:`MSSPADE`.

    Raises:
        ValueError: unknown keyword or invalid value.
    """
    return MSSPADE(latent_channels=latent_channels, modalities=modalities, **resolve_spade_config(**cfg))


def resolve_diffusion_config(**cfg: Any) -> dict[str, Any]:
    """The complete diffusion UNet configuration (:data:`DIFFUSION_DEFAULTS` overridden by ``cfg``)."""
    allowed = _monai_keywords(DiffusionModelUNet) - {
        "spatial_dims",
        "in_channels",
        "out_channels",
        "with_conditioning",
        "cross_attention_dim",
        "num_class_embeds",
    }
    _check_keys(cfg, allowed | {"conditioning"}, "diffusion")
    return {**DIFFUSION_DEFAULTS, **cfg}


class ConditionedDiffusionUNet(nn.Module):
    """Noise predictor ``eps(z_t, t | condition, target)``; for ALDM the condition is ``[z_src, SPADE(z_src)]``.

    Args:
        unet: the MONAI ``DiffusionModelUNet``: ``latent_channels + condition_channels`` input channels (ALDM:
            ``3 * latent_channels``) and ``latent_channels`` output channels.
        num_modalities: width of the target one-hot vector.
        conditioning: ``"film"`` (class embedding added to the time embedding, which also scales and shifts
            every resnet block's normalised activations), ``"class"`` (added to the time embedding only),
            ``"crossattn"`` (cross-attention on the one-hot vector, as in the paper) or ``"both"`` (class and
            cross-attention).
        divisor: latent sizes are padded to a multiple of this (the UNet's total down-sampling).
    """

    def __init__(self, unet: DiffusionModelUNet, num_modalities: int, conditioning: str, divisor: int) -> None:
        super().__init__()
        self.unet = unet
        self.num_modalities = num_modalities
        self.conditioning = conditioning
        self.divisor = divisor
        self.latent_channels = int(unet.out_channels)
        self.condition_channels = int(unet.in_channels) - self.latent_channels

    def forward(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor, target_index: torch.Tensor
    ) -> torch.Tensor:
        """Predict the noise.

        Args:
            noisy: ``(B, C, z, y, x)`` noisy target latent.
            timesteps: ``(B,)`` int64 diffusion timesteps.
            condition: ``(B, condition_channels, z, y, x)`` (ALDM: source latent and SPADE(source latent),
                concatenated: ``2C`` channels).
            target_index: ``(B,)`` int64 target modality indices.

        Returns:
            ``(B, C, z, y, x)`` predicted noise.
        """
        size = noisy.shape[2:]
        x = torch.cat([noisy, condition], dim=1)
        pads = []
        for s in reversed(size):  # F.pad wants the last dimension first
            pads += [0, math.ceil(s / self.divisor) * self.divisor - s]
        if any(pads):
            x = F.pad(x, pads, mode="replicate")
        kwargs: dict[str, torch.Tensor] = {}
        if self.conditioning in _CLASS_MODES:
            kwargs["class_labels"] = target_index.long()
        if self.conditioning in ("crossattn", "both"):
            kwargs["context"] = F.one_hot(target_index.long(), self.num_modalities).to(x.dtype)[:, None, :]
        eps = self.unet(x, timesteps, **kwargs)
        return eps[:, :, : size[0], : size[1], : size[2]]


def build_diffusion_unet(
    *, latent_channels: int, num_modalities: int, condition_channels: int | None = None, **cfg: Any
) -> ConditionedDiffusionUNet:
    """Build the latent diffusion UNet.

    Args:
        latent_channels: channels of the autoencoder latent (the noisy input and the predicted noise).
        num_modalities: number of target modalities (class embeddings / one-hot width).
        condition_channels: channels of the condition concatenated to the noisy latent; ``None`` means ALDM's
            ``2 * latent_channels`` (source latent and SPADE of it), so the UNet sees ``3 * latent_channels``.
        cfg: ``conditioning`` (one of :data:`CONDITIONING_MODES`) and keyword arguments of MONAI's
            ``DiffusionModelUNet``, merged over :data:`DIFFUSION_DEFAULTS`.

    Raises:
        ValueError: unknown keyword, unknown conditioning, cross-attention without an attention level, or a
            configuration MONAI rejects.
    """
    full = resolve_diffusion_config(**cfg)
    conditioning = full.pop("conditioning")
    if conditioning not in CONDITIONING_MODES:
        raise ValueError(f"conditioning must be one of {CONDITIONING_MODES}, got {conditioning!r}")
    if conditioning in ("crossattn", "both") and not any(full["attention_levels"]):
        raise ValueError("cross-attention conditioning needs at least one True entry in attention_levels")
    if latent_channels < 1 or num_modalities < 1:
        raise ValueError("latent_channels and num_modalities must be positive")
    condition_channels = 2 * latent_channels if condition_channels is None else condition_channels
    if isinstance(condition_channels, bool) or not isinstance(condition_channels, int) or condition_channels < 0:
        raise ValueError(f"condition_channels must be a non-negative integer, got {condition_channels!r}")
    crossattn = conditioning in ("crossattn", "both")
    unet = DiffusionModelUNet(
        spatial_dims=3,
        in_channels=latent_channels + condition_channels,
        out_channels=latent_channels,
        with_conditioning=crossattn,
        cross_attention_dim=num_modalities if crossattn else None,
        num_class_embeds=num_modalities if conditioning in _CLASS_MODES else None,
        **full,
    )
    if conditioning == "film":
        add_scale_shift_norms(unet)
    divisor = 2 ** (len(full["channels"]) - 1)
    return ConditionedDiffusionUNet(unet, num_modalities, conditioning, divisor)


def build_networks(network: dict[str, Any]) -> tuple[LatentAutoencoder, MSSPADE, ConditionedDiffusionUNet]:
    """Build all three parts from a bundle's ``metadata["network"]``.

    Args:
        network: ``{"modalities": [...], "autoencoder": {"kind": ..., ...}, "spade": {...}, "diffusion": {...}}``;
            ``modalities`` orders the target conditioning (class index = position).

    Raises:
        ValueError: a missing part or an invalid configuration.
    """
    missing = [k for k in ("modalities", "autoencoder", "spade", "diffusion") if k not in network]
    if missing:
        raise ValueError(f"aldm network config lacks {missing}")
    autoencoder_cfg = dict(network["autoencoder"])
    autoencoder = build_autoencoder(autoencoder_cfg.pop("kind", "vq"), **autoencoder_cfg)
    modalities = list(network["modalities"])
    spade = build_spade(latent_channels=autoencoder.latent_channels, modalities=modalities, **network["spade"])
    diffusion = build_diffusion_unet(
        latent_channels=autoencoder.latent_channels, num_modalities=len(modalities), **network["diffusion"]
    )
    return autoencoder, spade, diffusion
