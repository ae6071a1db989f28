"""AutoDrop (Teng, Wang, Choromanska), Table 1: ResNet-18 on CIFAR-10 with AutoDrop over SGD.

Paper settings: SGD momentum 0.9, weight decay 5e-4, initial rate 0.1, batch 128, drop factor
rho = 0.2, threshold 0.01 deg (max 1 deg), drop delay 20 epochs, rate floor 1e-4, 200 epochs.
"""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="cifar10", model="resnet18", optimizer="autodrop_sgd", learning_rate=0.1,
      weight_decay=5e-4,
      optimizer_options={"momentum": 0.9, "drop_factor": 0.2, "min_learning_rate": 1e-4,
                         "threshold": 0.01, "max_threshold": 1.0, "drop_delay": 20},
      batch_size=128, num_epochs=200)
