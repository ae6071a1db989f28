"""Adaptive Hierarchical Hyper-gradient Descent, Table 1 and Section 3.4: LeNet-5 on CIFAR-10 with
Adam-CAM-HD.

Paper settings: batch 256, Adam rate 1e-3, hypergradient rate 1e-8, CAM-HD rate delta = 0.03, two
levels (filter, global) with initial weights (0.2, 0.8), blending r = 0.002.
"""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="cifar10", model="lenet5", optimizer="adam_cam_hd", learning_rate=1e-3,
      optimizer_options={"hypergrad_lr": 1e-8, "combination_lr": 0.03,
                         "levels": ("filter", "global"), "weights": (0.2, 0.8),
                         "decay_rate": 0.002},
      batch_size=256, num_epochs=30)
