"""AutoDrop over SGD on ImageNet (ILSVRC-2012) with ResNet-50: the ImageNet setting of
Yunfei Teng, Jing Wang, Anna Choromanska, *AutoDrop: Training Deep Learning Models with Automatic
Learning Rate Drop* (Section 5, Table 1) with the larger standard ResNet.

The paper trains ResNet-18 on ImageNet (Appendix C.1; preset :mod:`autodrop_resnet18_imagenet`)
with He et al.'s procedure (Appendix C.2): SGD momentum 0.9, weight decay 1e-4, initial rate 0.1,
batch 256, and AutoDrop's drop factor rho = 0.1 (the factor the ImageNet baseline uses), for 105
epochs. The paper gives no AutoDrop threshold or delay for ImageNet; the CIFAR values (0.01 deg,
max 1 deg, delay 20 epochs, rate floor 1e-4) are kept. Input: random-resized 224 crops and flips
for training, the central 224/256 crop for evaluation (``train.input_pipeline``); 8 grain workers.
"""

from train.configs import Config


def get_config() -> Config:
  return Config(
      dataset="imagenet2012", model="resnet50_imagenet", optimizer="autodrop_sgd",
      learning_rate=0.1, weight_decay=1e-4,
      optimizer_options={"momentum": 0.9, "drop_factor": 0.1, "min_learning_rate": 1e-4,
                         "threshold": 0.01, "max_threshold": 1.0, "drop_delay": 20},
      batch_size=256, eval_batch_size=250, num_epochs=105, data_workers=8, prefetch_batches=4,
      checkpoint_every_steps=1000)
