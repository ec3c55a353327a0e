"""The latent transformer of the ``vae_transformer`` family (seed 000, Liang et al. 2025), from an explicit config.

The shared KL autoencoder is the ALDM one (:func:`MedTransCore.models.aldm.networks.build_autoencoder`, ``kind="kl"``);
this module adds the stacked **bidirectional** transformer that maps the latents of one or several sources to the
target's latent, guided by the source and target modalities.

Tokens: the latent window ``(C, z, y, x)`` of every source is cut into ``patch``^3 cubes, each a token (linear
embedding of its ``C * patch**3`` values) plus a learned position embedding and its source's modality embedding.
The target is asked for by one query token per position: a learned query vector plus the same position embedding
plus the target's modality embedding (a second table: "is T1" and "make T1" are different roles). Every token
attends to every other one (no causal mask), through ``torch.nn.functional.scaled_dot_product_attention``; source
slots that an item lacks are masked out of the keys, so one batch may mix items with different source sets. The
query tokens' outputs are projected back to latent cubes.

Choices the seed leaves open, and why (sizes are the config's; these are the defaults):

* Pre-norm blocks (LayerNorm -> attention / MLP -> residual): they train stably without warm-up tricks at this depth.
* The window is fixed (``grid``, in latent voxels) so that learned absolute position embeddings, as in the paper,
  apply; whole volumes go through the pipeline's overlapping sliding windows (``MedTransCore.translate``).
* The prediction is the target latent itself, in the scaled latent space (unit standard deviation), not a residual:
  across modalities the source latent is no useful starting point (T1 -> T2 inverts the contrast).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TRANSFORMER_DEFAULTS: dict[str, Any] = {
    "grid": [12, 12, 12],
    "patch": 2,
    "dim": 128,
    "depth": 4,
    "heads": 4,
    "mlp_ratio": 4.0,
    "dropout": 0.0,
}


def resolve_transformer_config(**cfg: Any) -> dict[str, Any]:
    """The complete transformer configuration (:data:`TRANSFORMER_DEFAULTS` overridden by ``cfg``).

    Raises:
        ValueError: an unknown keyword.
    """
    unknown = sorted(set(cfg) - set(TRANSFORMER_DEFAULTS))
    if unknown:
        raise ValueError(f"transformer: unknown keyword(s) {unknown}; allowed: {sorted(TRANSFORMER_DEFAULTS)}")
    full = {**TRANSFORMER_DEFAULTS, **cfg}
    full["grid"] = [int(g) for g in full["grid"]]
    return full


class TransformerBlock(nn.Module):
    """Pre-norm bidirectional self-attention + MLP.

    Args:
        dim: token width.
        heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: hidden width of the MLP over ``dim``.
        dropout: dropout on attention weights and MLP outputs (training only).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """``(B, L, dim)`` tokens; ``keep`` ``(B, L)`` bool (False: a key no token may attend to) or None."""
        b, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if keep is None else keep[:, None, None, :]
        drop = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, length, dim))
        return x + self.mlp(self.norm2(x))


class LatentTransformer(nn.Module):
    """Source latents (+ modalities) -> target latent, in one fixed latent window.

    Args:
        latent_channels: channels ``C`` of the autoencoder's latent.
        modalities: registry keys the modality embeddings stand for (the bundle's ``modalities`` order).
        grid: latent window ``[z, y, x]``, each divisible by ``patch``.
        patch: edge of a token's latent cube.
        dim: token width.
        depth: transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width over ``dim``.
        dropout: dropout probability in the blocks.

    Raises:
        ValueError: an inconsistent setting.
    """

    def __init__(
        self,
        *,
        latent_channels: int,
        modalities: list[str],
        grid: list[int] = TRANSFORMER_DEFAULTS["grid"],
        patch: int = TRANSFORMER_DEFAULTS["patch"],
        dim: int = TRANSFORMER_DEFAULTS["dim"],
        depth: int = TRANSFORMER_DEFAULTS["depth"],
        heads: int = TRANSFORMER_DEFAULTS["heads"],
        mlp_ratio: float = TRANSFORMER_DEFAULTS["mlp_ratio"],
        dropout: float = TRANSFORMER_DEFAULTS["dropout"],
    ) -> None:
        super().__init__()
        if latent_channels < 1:
            raise ValueError(f"latent_channels must be positive, got {latent_channels}")
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be distinct registry keys, got {list(modalities)}")
        if not isinstance(patch, int) or patch < 1:
            raise ValueError(f"patch must be a positive int, got {patch!r}")
        if len(grid) != 3 or any(int(g) < patch or int(g) % patch for g in grid):
            raise ValueError(f"grid must be three latent edges, each a multiple of patch={patch}; got {list(grid)}")
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if mlp_ratio <= 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"mlp_ratio must be > 0 and dropout in [0, 1); got {mlp_ratio}, {dropout}")
        self.latent_channels, self.modalities, self.patch = latent_channels, list(modalities), patch
        self.grid = tuple(int(g) for g in grid)
        self.tokens_per_source = math.prod(g // patch for g in self.grid)
        cube = latent_channels * patch**3
        self.embed = nn.Linear(cube, dim)
        self.position = nn.Parameter(torch.zeros(1, self.tokens_per_source, dim))
        self.source_modality = nn.Embedding(len(modalities), dim)
        self.target_modality = nn.Embedding(len(modalities), dim)
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, cube)
        for table in (self.position, self.query, self.source_modality.weight, self.target_modality.weight):
            nn.init.trunc_normal_(table, std=0.02)

    def tokens(self, latent: torch.Tensor) -> torch.Tensor:
        """``(N, C, z, y, x)`` latents -> ``(N, tokens_per_source, C * patch^3)`` cubes in raster order."""
        n, c, *size = latent.shape
        p = self.patch
        g = [s // p for s in size]
        cubes = latent.reshape(n, c, g[0], p, g[1], p, g[2], p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return cubes.reshape(n, g[0] * g[1] * g[2], c * p**3)

    def untokens(self, cubes: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`tokens` on this window: ``(N, L, C * patch^3)`` -> ``(N, C, z, y, x)``."""
        n, p, c = cubes.shape[0], self.patch, self.latent_channels
        g = [s // p for s in self.grid]
        latent = cubes.reshape(n, g[0], g[1], g[2], c, p, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return latent.reshape(n, c, *self.grid)

    def forward(
        self, sources: torch.Tensor, source_modality: torch.Tensor, present: torch.Tensor, target_modality: torch.Tensor
    ) -> torch.Tensor:
        """Predict the target latent.

        Args:
            sources: ``(B, S, C, z, y, x)`` scaled source latents on the window ``grid`` (any values in absent slots).
            source_modality: ``(B, S)`` int64 indices into ``modalities`` of each slot.
            present: ``(B, S)`` bool, False for a slot the item lacks; every item needs at least one.
            target_modality: ``(B,)`` int64 index of the wanted modality.

        Returns:
            ``(B, C, z, y, x)`` scaled target latent.
        """
        b, s = sources.shape[:2]
        if tuple(sources.shape[3:]) != self.grid or sources.shape[2] != self.latent_channels:
            raise ValueError(
                f"sources must be (B, S, {self.latent_channels}, {', '.join(map(str, self.grid))}); got {tuple(sources.shape)}"
            )
        if not bool(present.any(dim=1).all()):
            raise ValueError("every item needs at least one present source")
        n = self.tokens_per_source
        embedded = self.embed(self.tokens(sources.flatten(0, 1))).reshape(b, s, n, -1)
        embedded = embedded + self.position[:, None] + self.source_modality(source_modality)[:, :, None]
        queries = self.query + self.position + self.target_modality(target_modality)[:, None]
        x = torch.cat([queries, embedded.flatten(1, 2)], dim=1)
        keep = None
        if not bool(present.all()):
            keep = torch.cat([present.new_ones(b, n), present.repeat_interleave(n, dim=1)], dim=1)
        for block in self.blocks:
            x = block(x, keep)
        return self.untokens(self.head(self.norm(x[:, :n])))


def build_transformer(*, latent_channels: int, modalities: list[str], **cfg: Any) -> LatentTransformer:
    """Build the latent transformer from its keyword config (the bundle's ``network["transformer"]``).

    Raises:
        ValueError: an unknown keyword or inconsistent value.
    """
    return LatentTransformer(
        latent_channels=latent_channels, modalities=modalities, **resolve_transformer_config(**cfg)
    )
