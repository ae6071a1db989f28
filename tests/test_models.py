"""Tests of models/: output shapes, parameter counts against published or hand-derived figures,
BatchNorm statistics synchronised across devices, dropout, and argument errors.

The big models are only traced (``jax.eval_shape``), nothing of them is computed.
"""

from __future__ import annotations

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import models


def _conv(k: int, c_in: int, c_out: int, bias: bool = False) -> int:
  return k * k * c_in * c_out + (c_out if bias else 0)


def _bn(c: int) -> int:  # scale and bias; running statistics live in batch_stats
  return 2 * c


def _dense(n_in: int, n_out: int) -> int:
  return n_in * n_out + n_out


@functools.cache
def _abstract_init(name: str, num_classes: int, shape: tuple[int, ...], **kwargs):
  """Shapes of ``create_model(name, num_classes).init`` on an input of ``shape``; nothing runs."""
  model = models.create_model(name, num_classes, **kwargs)
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32), train=False))


def _numpy_variables(model: nn.Module, shape: tuple[int, ...], seed: int = 0):
  """Variables for ``model`` drawn with NumPy: kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.01),
  BatchNorm scale 1 and fresh statistics (mean 0, var 1). Skips compiling JAX's random
  initialisers, which cost ~0.3 s of CPU per leaf."""
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == "kernel":
      return jnp.asarray(rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1])), jnp.float32)
    if name == "bias" and path[0].key == "params":
      return jnp.asarray(0.1 * rng.normal(size=shape), jnp.float32)
    return jnp.ones(shape) if name in ("scale", "var") else jnp.zeros(shape)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _data(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# ---------------------------------------------------------------------------- parameter counts

CIFAR, IMAGENET = (1, 32, 32, 3), (1, 224, 224, 3)

# (name, num_classes, input shape, parameters). CIFAR ResNets: the figures of the standard PyTorch
# CIFAR implementation (kuangliu/pytorch-cifar); ImageNet ResNets: torchvision's; WRN-28-10 and
# WRN-16-4: the reference WideResNet implementation (Zagoruyko & Komodakis report 36.5M / 2.7M).
PUBLISHED_COUNTS = [
    ("resnet18", 10, CIFAR, 11_173_962),
    ("resnet34", 10, CIFAR, 21_282_122),
    ("resnet50", 10, CIFAR, 23_520_842),
    ("wrn16_4", 10, CIFAR, 2_748_890),
    ("wrn28_10", 10, CIFAR, 36_479_194),
    ("resnet18_imagenet", 1000, IMAGENET, 11_689_512),
    ("resnet50_imagenet", 1000, IMAGENET, 25_557_032),
]


@pytest.mark.parametrize("name,num_classes,shape,expected", PUBLISHED_COUNTS,
                         ids=[c[0] for c in PUBLISHED_COUNTS])
def test_published_parameter_counts(name, num_classes, shape, expected):
  variables = _abstract_init(name, num_classes, shape)
  assert models.count_params(variables) == expected
  assert models.count_params(variables["params"]) == expected  # a params tree directly


def _wrn_count(depth: int, k: int, num_classes: int) -> int:
  """WRN-d-k by hand: stem, 3 groups of pre-activation blocks, final BN, classifier."""
  total, c_in = _conv(3, 3, 16), 16
  for width in (16 * k, 32 * k, 64 * k):
    for _ in range((depth - 4) // 6):
      total += _bn(c_in) + _conv(3, c_in, width) + _bn(width) + _conv(3, width, width)
      total += _conv(1, c_in, width) if c_in != width else 0  # projection shortcut
      c_in = width
  return total + _bn(c_in) + _dense(c_in, num_classes)


@pytest.mark.parametrize("name,depth,k", [("wrn16_8", 16, 8), ("wrn22_4", 22, 4),
                                          ("wrn40_10", 40, 10)])
def test_wide_resnet_counts_by_hand(name, depth, k):
  variables = _abstract_init(name, 100, CIFAR)
  assert models.count_params(variables) == _wrn_count(depth, k, 100)
  assert _wrn_count(28, 10, 10) == 36_479_194 and _wrn_count(16, 4, 10) == 2_748_890


def test_densenet_bc121_count_by_hand():
  growth, total, c = 12, _conv(3, 3, 24), 24  # 3x3 stem to 2 * growth channels
  for i, layers in enumerate((6, 12, 24, 16)):
    for _ in range(layers):  # BN-ReLU-conv1x1 (4g) - BN-ReLU-conv3x3 (g), concatenated
      total += _bn(c) + _conv(1, c, 4 * growth) + _bn(4 * growth) + _conv(3, 4 * growth, growth)
      c += growth
    if i < 3:  # transition, compression 0.5
      total += _bn(c) + _conv(1, c, c // 2)
      c //= 2
  # Channels: 24 + 6g = 96 -> 48; 48 + 12g = 192 -> 96; 96 + 24g = 384 -> 192; 192 + 16g = 384.
  assert c == 384
  assert models.count_params(_abstract_init("densenet_bc121", 10, CIFAR)) == (
      total + _bn(c) + _dense(c, 10)) == 1_000_618


def test_lenet5_count_by_hand():
  # Variant: conv5x5(6) valid on a 32x32 field -> maxpool2 -> conv5x5(16) valid -> maxpool2
  # -> 5*5*16 = 400 -> dense 120 -> dense 84 -> classifier; ReLU; convolutions with bias.
  #   conv1: 5*5*3*6 + 6 = 456        conv2: 5*5*6*16 + 16 = 2,416
  #   fc1: 400*120 + 120 = 48,120     fc2: 120*84 + 84 = 10,164     fc3: 84*10 + 10 = 850
  #   CIFAR-10 (3 channels): 456 + 2,416 + 48,120 + 10,164 + 850 = 62,006
  #   MNIST (1 channel, 28x28 padded to 32x32): conv1 = 5*5*1*6 + 6 = 156, total 61,706
  assert models.count_params(_abstract_init("lenet5", 10, CIFAR)) == 62_006
  assert models.count_params(_abstract_init("lenet5", 10, (1, 28, 28, 1))) == 61_706


def test_small_model_counts_by_hand():
  mlp = _abstract_init("mlp", 10, (1, 28, 28, 1))
  assert models.count_params(mlp) == 784 * 1000 + 1000 + 1000 * 10 + 10 == 795_010
  deep = _abstract_init("mlp", 10, (1, 8, 8, 1), features=(64, 32))
  assert models.count_params(deep) == _dense(64, 64) + _dense(64, 32) + _dense(32, 10)
  # small_cnn on 8x8 digits: conv3x3(32)+bias, avgpool -> 4x4, conv3x3(64)+bias, avgpool -> 2x2,
  # 2*2*64 = 256 -> dense 128 -> 10.
  assert models.count_params(_abstract_init("small_cnn", 10, (1, 8, 8, 1))) == (
      _conv(3, 1, 32, True) + _conv(3, 32, 64, True) + _dense(256, 128) + _dense(128, 10)
  ) == 53_002


# ---------------------------------------------------------------------------- shapes

SHAPE_CASES = [(name, 1000 if "imagenet" in name else 10, IMAGENET if "imagenet" in name else CIFAR)
               for name in models.MODELS]
SHAPE_CASES += [("mlp", 10, (1, 8, 8, 1)), ("small_cnn", 10, (1, 8, 8, 1)),
                ("lenet5", 10, (1, 28, 28, 1)), ("mlp", 10, (1, 17))]


@pytest.mark.parametrize("name,num_classes,shape", SHAPE_CASES,
                         ids=[f"{n}-{s[1]}" for n, _, s in SHAPE_CASES])
def test_output_shapes(name, num_classes, shape):
  model = models.create_model(name, num_classes)
  variables = _abstract_init(name, num_classes, shape)
  has_bn = name not in ("mlp", "small_cnn", "lenet5", "patch_cnn")
  assert sorted(variables) == (["batch_stats", "params"] if has_bn else ["params"])
  batch = (3,) + shape[1:]
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(batch), train=False), variables)
  assert logits.shape == (3, num_classes) and logits.dtype == jnp.float32
  logits, updates = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros(batch), train=True, mutable=["batch_stats"]), variables)
  assert logits.shape == (3, num_classes)
  if has_bn:  # training updates every running statistic, with unchanged shapes
    assert jax.tree.map(lambda a: a.shape, updates["batch_stats"]) == jax.tree.map(
        lambda a: a.shape, variables["batch_stats"])
  else:
    assert not updates


def test_bfloat16_computation_keeps_float32_params_and_logits():
  model = models.create_model("resnet18", 10, dtype=jnp.bfloat16)
  variables = _abstract_init("resnet18", 10, CIFAR, dtype=jnp.bfloat16)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits, _ = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), train=True, mutable=["batch_stats"]),
      variables)
  assert logits.dtype == jnp.float32


# ---------------------------------------------------------------------------- computed values

def test_mlp_computes_its_layers():
  model = models.MLP(num_classes=3, features=(5,))
  x = _data((4, 2, 3))
  params = _numpy_variables(model, x.shape)["params"]
  h = np.maximum(np.reshape(x, (4, 6)) @ params["hidden_0"]["kernel"] + params["hidden_0"]["bias"],
                 0)
  expected = h @ params["head"]["kernel"] + params["head"]["bias"]
  np.testing.assert_allclose(jax.jit(model.apply)({"params": params}, x), expected, rtol=1e-5,
                             atol=1e-5)


def test_lenet5_pads_small_inputs_to_a_centred_32x32_field():
  model = models.create_model("lenet5", 10)
  x = _data((2, 28, 28, 1))
  variables = _numpy_variables(model, x.shape)
  padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  small, full = jax.jit(lambda v: (model.apply(v, x), model.apply(v, padded)))(variables)
  np.testing.assert_allclose(small, full, rtol=1e-6, atol=1e-6)


def test_batchnorm_running_statistics_use_momentum_0_9():
  # One training step from fresh statistics (mean 0, var 1): mean <- 0.1 * batch mean,
  # var <- 0.9 + 0.1 * batch variance (PyTorch's momentum 0.1); the stem has no bias.
  model = models.ResNet(stage_sizes=(1,), block_cls=models.ResNetBlock, num_classes=2,
                        num_filters=4)
  x = _data((6, 4, 4, 3)) * 2.0 + 1.0
  variables = _numpy_variables(model, x.shape)
  _, updates = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
      variables, x)
  kernel = np.asarray(variables["params"]["conv_init"]["kernel"], np.float64)
  padded = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  stem = sum(padded[:, i:i + 4, j:j + 4, :] @ kernel[i, j] for i in range(3) for j in range(3))
  mean, var = stem.mean(axis=(0, 1, 2)), stem.var(axis=(0, 1, 2))
  stats = updates["batch_stats"]["bn_init"]
  np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-4)


def test_wide_resnet_dropout():
  x = _data((2, 8, 8, 3))
  plain = models.WideResNet(depth=10, widen_factor=1, num_classes=3)
  dropped = models.create_model("wrn16_4", 3, depth=10, widen_factor=1, dropout_rate=0.5)
  variables = _numpy_variables(plain, x.shape)  # dropout adds no variables

  @jax.jit
  def run(keys):
    train = lambda m, k: m.apply(variables, x, train=True, mutable=["batch_stats"],  # noqa: E731
                                 rngs={"dropout": k})[0]
    return (dropped.apply(variables, x), plain.apply(variables, x),
            [train(dropped, k) for k in keys])

  dropped_eval, plain_eval, (a, b) = run([jax.random.key(2), jax.random.key(3)])
  np.testing.assert_array_equal(dropped_eval, plain_eval)  # evaluation ignores dropout
  assert not np.allclose(a, b, atol=1e-3)  # training draws the mask from the "dropout" rng
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(lambda v: dropped.apply(v, x, train=True, mutable=["batch_stats"]), variables)


# ---------------------------------------------------------------------------- synced BatchNorm

TINY_BN_MODELS = {
    "resnet": functools.partial(models.ResNet, stage_sizes=(1, 1), block_cls=models.ResNetBlock,
                                num_filters=4),
    "wide_resnet": functools.partial(models.WideResNet, depth=10, widen_factor=1),
    "densenet": functools.partial(models.DenseNet, block_sizes=(2, 2), growth_rate=4),
}


@pytest.mark.parametrize("family", list(TINY_BN_MODELS))
def test_batchnorm_statistics_are_averaged_across_devices(family):
  devices = 4
  mesh = Mesh(np.array(jax.devices()[:devices]), ("batch",))
  # Each device holds different data: shard d is scaled by 1 + d and shifted by d.
  scale = (1.0 + np.arange(devices))[:, None, None, None, None]
  x = (_data((devices, 2, 8, 8, 3)) * scale + scale - 1.0).reshape(devices * 2, 8, 8, 3)
  synced = TINY_BN_MODELS[family](num_classes=3, axis_name="batch")
  single = TINY_BN_MODELS[family](num_classes=3)
  variables = _numpy_variables(single, x.shape)

  def step(model, v, batch):
    return model.apply(v, batch, train=True, mutable=["batch_stats"])

  # out_specs P() for the statistics: shard_map's replication check itself requires them to be
  # equal on every device.
  sharded = jax.jit(jax.shard_map(functools.partial(step, synced), mesh=mesh,
                                  in_specs=(P(), P("batch")), out_specs=(P("batch"), P())))
  logits, stats = sharded(variables, x)
  want_logits, want_stats = jax.jit(functools.partial(step, single))(variables, x)  # whole batch
  np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), stats,
               want_stats)
  if family == "resnet":
    # pmap with the same axis name gives the same statistics ...
    pmapped = jax.pmap(functools.partial(step, synced), axis_name="batch", in_axes=(None, 0),
                       devices=jax.devices()[:devices])
    _, pmap_stats = pmapped(variables, x.reshape(devices, 2, 8, 8, 3))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-5),
                 pmap_stats, want_stats)
    # ... and without an axis name each device keeps its own, different, statistics.
    unsynced = jax.pmap(functools.partial(step, single), in_axes=(None, 0),
                        devices=jax.devices()[:devices])
    _, local = unsynced(variables, x.reshape(devices, 2, 8, 8, 3))
    local_mean = np.asarray(local["batch_stats"]["bn_init"]["mean"])
    assert not np.allclose(local_mean[0], local_mean[3], rtol=0.1)
    # Equal shards: the global mean is the mean of the device means.
    np.testing.assert_allclose(local_mean.mean(axis=0),
                               want_stats["batch_stats"]["bn_init"]["mean"], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- errors

def test_unknown_model_name_lists_the_valid_names():
  with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18.*wrn28_10"):
    models.create_model("resnet19", 10)


def test_unknown_attribute_lists_the_valid_ones():
  with pytest.raises(ValueError, match="widths.*valid: features"):
    models.create_model("mlp", 10, widths=(10,))


@pytest.mark.parametrize("name,kwargs,argument", [
    ("mlp", {"num_classes": 0}, "num_classes"),
    ("lenet5", {"num_classes": 2.5}, "num_classes"),
    ("mlp", {"num_classes": 10, "features": (100, 0)}, "features"),
    ("small_cnn", {"num_classes": 10, "hidden": 0}, "hidden"),
    ("resnet18", {"num_classes": 10, "stem": "tiny"}, "stem"),
    ("resnet18", {"num_classes": 10, "num_filters": 0}, "num_filters"),
    ("resnet18", {"num_classes": 10, "stage_sizes": ()}, "stage_sizes"),
    ("wrn16_4", {"num_classes": 10, "depth": 18}, "depth"),
    ("wrn16_4", {"num_classes": 10, "widen_factor": 0}, "widen_factor"),
    ("wrn16_4", {"num_classes": 10, "dropout_rate": 1.0}, "dropout_rate"),
    ("wrn16_4", {"num_classes": 10, "dropout_rate": -0.1}, "dropout_rate"),
    ("densenet_bc121", {"num_classes": 10, "growth_rate": 0}, "growth_rate"),
    ("densenet_bc121", {"num_classes": 10, "compression": 0.0}, "compression"),
    ("densenet_bc121", {"num_classes": 10, "num_init_features": 0}, "num_init_features"),
])
def test_bad_attributes_raise_value_error_naming_them(name, kwargs, argument):
  with pytest.raises(ValueError, match=f"`{argument}` must be"):
    models.create_model(name, **kwargs)


def test_registry_holds_the_issue_names():
  assert list(models.MODELS) == [
      "mlp", "small_cnn", "lenet5", "patch_cnn", "resnet18", "resnet34", "resnet50", "wrn16_4",
      "wrn16_8", "wrn22_4", "wrn28_10", "wrn40_10", "densenet_bc121", "resnet18_imagenet",
      "resnet50_imagenet"]


# --- The byte-level transformer language model -------------------------------------------------


def _transformer_params(width: int, layers: int, vocab: int, max_len: int, mlp: int = 4) -> int:
  ln = 2 * width
  attn = 3 * (width * width + width) + (width * width + width)
  block = 2 * ln + attn + _dense(width, mlp * width) + _dense(mlp * width, width)
  return vocab * width + max_len * width + layers * block + ln + _dense(width, vocab)


def test_transformer_lm_shapes_and_parameter_count():
  model = models.TransformerLMSmall(max_len=16)
  tokens = jnp.zeros((3, 10), jnp.int32)
  variables = model.init(jax.random.key(0), tokens)
  logits = model.apply(variables, tokens)
  assert logits.shape == (3, 10, 256) and logits.dtype == jnp.float32
  # 256*128 + 16*128 + 2*(2*256 + 4*(128*128+128) + 128*512+512 + 512*128+128) + 256 + 128*256+256
  assert models.count_params(variables) == _transformer_params(128, 2, 256, 16) == 464_640
  names = set(variables["params"])
  assert names == {"token_embed", "pos_embed", "block_0", "block_1", "ln_final", "head"}
  assert set(variables["params"]["block_0"]["attn"]) == {"query", "key", "value", "out"}


def test_transformer_lm_is_causal():
  """Changing the token at position 5 leaves the logits at positions 0..4 unchanged and changes
  those at 5 and later."""
  model = models.TransformerLM(num_layers=2, width=32, num_heads=4, max_len=12)
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 256)
  variables = model.init(jax.random.key(0), tokens)
  changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % 256)
  a, b = model.apply(variables, tokens), model.apply(variables, changed)
  np.testing.assert_array_equal(np.asarray(a[:, :5]), np.asarray(b[:, :5]))
  assert float(jnp.min(jnp.max(jnp.abs(a[:, 5:] - b[:, 5:]), axis=-1))) > 0


@pytest.mark.parametrize("kwargs, argument", [
    ({"width": 30, "num_heads": 4}, "width"), ({"num_layers": 0}, "num_layers"),
    ({"vocab_size": 0}, "vocab_size")])
def test_transformer_lm_bad_attributes(kwargs, argument):
  with pytest.raises(ValueError, match=f"`{argument}` must be"):
    models.TransformerLM(**kwargs)


def test_transformer_lm_rejects_sequences_longer_than_max_len():
  model = models.TransformerLM(width=16, num_heads=2, max_len=4)
  with pytest.raises(ValueError, match="max_len"):
    model.init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))


def test_patch_cnn_convolution_equals_flax_conv():
  # The patch product is nn.Conv(features, (3, 3), padding="SAME") with the same parameters.
  import flax.linen as nn

  from models.simple import _PatchConv

  x = jax.random.normal(jax.random.key(0), (2, 6, 5, 3))
  params = _PatchConv(4).init(jax.random.key(1), x)
  params = jax.tree.map(lambda a: a + 0.1, params)  # a non-zero bias
  np.testing.assert_allclose(_PatchConv(4).apply(params, x),
                             nn.Conv(4, (3, 3), padding="SAME").apply(params, x), atol=1e-5)
