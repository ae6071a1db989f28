"""The baseline of :mod:`autodrop_resnet50_imagenet`: the same ResNet-50/ImageNet run with SGD and
He et al.'s hand-set schedule, the rate times 0.1 at epochs 30, 60 and 90 of 105 (the baseline of
Teng, Wang, Choromanska, *AutoDrop*, Table 1)."""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="imagenet2012", model="resnet50_imagenet", optimizer="sgd_multistep",
      learning_rate=0.1, weight_decay=1e-4,
      optimizer_options={"momentum": 0.9, "milestones": (30 / 105, 60 / 105, 90 / 105),
                         "drop_factor": 0.1},
      batch_size=256, eval_batch_size=250, num_epochs=105, data_workers=8, prefetch_batches=4,
      checkpoint_every_steps=1000)
