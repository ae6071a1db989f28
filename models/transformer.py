"""A small decoder-only transformer language model over bytes (GPT-2 layout, pre-LayerNorm).

Token embedding over a byte vocabulary (256), a learned positional embedding, ``num_layers``
pre-LayerNorm blocks (``x + attn(ln(x))``, ``x + mlp(ln(x))``) with causal multi-head
self-attention and a GELU MLP of width ``mlp_ratio * width``, a final LayerNorm and an untied
output head (Radford et al., "Language Models are Unsupervised Multitask Learners", 2019, Section
2.3). Parameter names follow the groups an optimizer diagnosis reads: ``token_embed``,
``pos_embed``, ``block_{i}/{ln_attn, attn/{query, key, value, out}, ln_mlp, mlp_in, mlp_out}``,
``ln_final``, ``head``.

:class:`TransformerLM` maps int tokens ``(N, L)`` with ``L <= max_len`` to float32 logits
``(N, L, vocab_size)``; the logits at position ``t`` depend on tokens ``0..t`` only.
:data:`TransformerLMSmall` is the 2-block, width-128, 4-head variant of the AdaSecant issue.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import _checks


class CausalSelfAttention(nn.Module):
  """Multi-head self-attention where position ``t`` attends to positions ``<= t``.

  Attributes:
    num_heads: number of heads; must divide the input width.
  """

  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``x`` of shape ``(N, L, D)`` -> ``(N, L, D)``."""
    length, width = x.shape[-2], x.shape[-1]
    head_dim = width // self.num_heads
    dense = functools.partial(nn.DenseGeneral, features=(self.num_heads, head_dim))
    q = dense(name="query")(x)
    k = dense(name="key")(x)
    v = dense(name="value")(x)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(head_dim).astype(x.dtype)
    causal = jnp.tril(jnp.ones((length, length), bool))
    logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("nhqk,nkhd->nqhd", weights, v)
    return nn.DenseGeneral(width, axis=(-2, -1), name="out")(out)


class TransformerBlock(nn.Module):
  """Pre-LayerNorm block: ``x + attn(ln_attn(x))`` then ``x + mlp_out(gelu(mlp_in(ln_mlp(x))))``.

  Attributes:
    num_heads: attention heads.
    mlp_ratio: MLP hidden width as a multiple of the input width.
  """

  num_heads: int
  mlp_ratio: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = x + CausalSelfAttention(self.num_heads, name="attn")(nn.LayerNorm(name="ln_attn")(x))
    h = nn.Dense(self.mlp_ratio * width, name="mlp_in")(nn.LayerNorm(name="ln_mlp")(x))
    return x + nn.Dense(width, name="mlp_out")(nn.gelu(h))


class TransformerLM(nn.Module):
  """Decoder-only transformer language model.

  Attributes:
    vocab_size: number of token ids (256 for bytes); also the number of output logits.
    num_layers: number of blocks (>= 1).
    width: model width (>= 1), divisible by ``num_heads``.
    num_heads: attention heads (>= 1).
    max_len: the longest sequence (size of the positional embedding).
    mlp_ratio: MLP hidden width as a multiple of ``width``.
  """

  vocab_size: int = 256
  num_layers: int = 2
  width: int = 128
  num_heads: int = 4
  max_len: int = 128
  mlp_ratio: int = 4

  def __post_init__(self) -> None:
    _checks.integer_at_least("vocab_size", self.vocab_size, 1)
    _checks.integer_at_least("num_layers", self.num_layers, 1)
    _checks.integer_at_least("width", self.width, 1)
    _checks.integer_at_least("num_heads", self.num_heads, 1)
    _checks.integer_at_least("max_len", self.max_len, 1)
    _checks.integer_at_least("mlp_ratio", self.mlp_ratio, 1)
    if self.width % self.num_heads:
      raise ValueError(f"`width` must be divisible by `num_heads` ({self.num_heads}); "
                       f"got {self.width!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    """Returns float32 logits ``(N, L, vocab_size)`` for int tokens ``(N, L)``, ``L <= max_len``."""
    del train  # no dropout, no batch statistics
    length = tokens.shape[-1]
    if length > self.max_len:  # static shape: a trace-time check
      raise ValueError(f"sequence length {length} exceeds `max_len` {self.max_len}.")
    init = nn.initializers.normal(stddev=0.02)
    x = nn.Embed(self.vocab_size, self.width, embedding_init=init, name="token_embed")(tokens)
    pos = self.param("pos_embed", init, (self.max_len, self.width))
    x = x + pos[:length]
    for i in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.mlp_ratio, name=f"block_{i}")(x)
    x = nn.LayerNorm(name="ln_final")(x)
    return nn.Dense(self.vocab_size, name="head")(x).astype(jnp.float32)


# The model of the AdaSecant transformer issue: 2 blocks, width 128, 4 heads, bytes.
TransformerLMSmall = functools.partial(TransformerLM, vocab_size=256, num_layers=2, width=128,
                                       num_heads=4)
