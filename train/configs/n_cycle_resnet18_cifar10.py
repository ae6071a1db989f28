"""Sasse's thesis, Table 4.1's best SGD run: ResNet-18 on CIFAR-10 with the 25-cycle CLR.

Settings: SGD momentum 0.9, the rate cycling linearly 0.001 -> 1 -> 0.001 every 25 epochs, batch
128, 100 epochs (four cycles).
"""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="cifar10", model="resnet18", optimizer="n_cycle_sgd", learning_rate=1.0,
      optimizer_options={"min_learning_rate": 1e-3, "cycle_epochs": 25, "momentum": 0.9},
      batch_size=128, num_epochs=100)
