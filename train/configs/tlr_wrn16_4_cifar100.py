"""Trainable Learning Rate, Section 5: WRN-16-4 on CIFAR-100 with ``sgd_tlr``.

Paper settings: momentum 0.8, weight decay 5e-4, the rate updated every p = 1/3 epoch from the
window's summed stochastic gradients (Eq. 10) with the bound c = 1/4, batch 256, initial rate 0.1
(the method is robust to it), 80 epochs.
"""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="cifar100", model="wrn16_4", optimizer="tlr_sgd", learning_rate=0.1,
      weight_decay=5e-4,
      optimizer_options={"momentum": 0.8, "window_fraction": 1 / 3, "bound": 0.25,
                         "window_sum": "gradient"},
      batch_size=256, num_epochs=80)
