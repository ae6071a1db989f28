"""The baseline of :mod:`autodrop_resnet18_imagenet`: the same ResNet-18/ImageNet run with SGD and
He et al.'s hand-set schedule, the rate times 0.1 at epochs 30, 60 and 90 of 105 (the baseline of
Teng, Wang, Choromanska, *AutoDrop*, Table 1, 29.93% final top-1 test error)."""

import dataclasses

from train.configs import Config, multistep_resnet50_imagenet


def get_config() -> Config:
  # The ResNet-50 preset's run (optimizer, schedule, input pipeline) with the paper's ResNet-18.
  return dataclasses.replace(multistep_resnet50_imagenet.get_config(), model="resnet18_imagenet")
