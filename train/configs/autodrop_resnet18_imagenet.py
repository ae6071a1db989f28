"""AutoDrop over SGD on ImageNet (ILSVRC-2012) with ResNet-18, the ImageNet experiment of
Yunfei Teng, Jing Wang, Anna Choromanska, *AutoDrop: Training Deep Learning Models with Automatic
Learning Rate Drop* (Table 1, Appendix C): He et al.'s procedure (SGD momentum 0.9, weight decay
1e-4, initial rate 0.1, batch 256) with AutoDrop's drop factor rho = 0.1, 105 epochs; the paper
reports 29.80% final top-1 test error. AutoDrop's threshold and delay are the CIFAR values (the
paper gives none for ImageNet). See :mod:`autodrop_resnet50_imagenet` for the input pipeline.
"""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="imagenet2012", model="resnet18_imagenet", optimizer="autodrop_sgd",
      learning_rate=0.1, weight_decay=1e-4,
      optimizer_options={"momentum": 0.9, "drop_factor": 0.1, "min_learning_rate": 1e-4,
                         "threshold": 0.01, "max_threshold": 1.0, "drop_delay": 20},
      batch_size=256, eval_batch_size=250, num_epochs=105, data_workers=8, prefetch_batches=4,
      checkpoint_every_steps=1000)
