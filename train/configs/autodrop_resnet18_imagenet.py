"""AutoDrop over SGD on ImageNet (ILSVRC-2012) with ResNet-18, the ImageNet experiment of
Yunfei Teng, Jing Wang, Anna Choromanska, *AutoDrop: Training Deep Learning Models with Automatic
Learning Rate Drop* (Table 1, Appendix C): He et al.'s procedure (SGD momentum 0.9, weight decay
1e-4, initial rate 0.1, batch 256) with AutoDrop's drop factor rho = 0.1, 105 epochs; the paper
reports 29.80% final top-1 test error. AutoDrop's threshold and delay are the CIFAR values (the
paper gives none for ImageNet). See :mod:`autodrop_resnet50_imagenet` for the input pipeline.
"""

import dataclasses

from train.configs import Config, autodrop_resnet50_imagenet


def get_config() -> Config:
  # The ResNet-50 preset's run (optimizer, schedule, input pipeline) with the paper's ResNet-18.
  return dataclasses.replace(autodrop_resnet50_imagenet.get_config(), model="resnet18_imagenet")
