"""Sasse's thesis §4.5.2: the hybrid on ResNet-18/CIFAR-10 — CLR-SGD for the first 13 epochs
of a 25-cycle (0.001 -> 1), then Simple AdaSecant (threshold 10). Batch 128, 25 epochs."""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="cifar10", model="resnet18", optimizer="clr_simple_adasecant", learning_rate=1.0,
      optimizer_options={"min_learning_rate": 1e-3, "cycle_epochs": 25, "switch_epoch": 13,
                         "momentum": 0.9, "threshold": 10.0},
      batch_size=128, num_epochs=25)
