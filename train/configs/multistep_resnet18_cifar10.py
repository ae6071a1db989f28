"""The AutoDrop paper's baseline for :mod:`autodrop_resnet18_cifar10`: the same ResNet-18/CIFAR-10
run with SGD and the hand-set multistep schedule (x0.2 at epochs 60, 120 and 160 of 200)."""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="cifar10", model="resnet18", optimizer="sgd_multistep", learning_rate=0.1,
      weight_decay=5e-4,
      optimizer_options={"momentum": 0.9, "milestones": (0.3, 0.6, 0.8), "drop_factor": 0.2},
      batch_size=128, num_epochs=200)
