"""Trainable Learning Rate, Section 5: an MLP with one hidden layer of 1000 units on MNIST with
``sgd_tlr`` (momentum 0.8, weight decay 5e-4, p = 1/3, c = 1/4), batch 128, 80 epochs; window sums
of the stochastic gradients (Eq. 10)."""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="mnist", model="mlp", model_options={"features": (1000,)}, optimizer="tlr_sgd",
      learning_rate=0.1, weight_decay=5e-4,
      optimizer_options={"momentum": 0.8, "window_fraction": 1 / 3, "bound": 0.25,
                         "window_sum": "gradient"},
      batch_size=128, num_epochs=80)
