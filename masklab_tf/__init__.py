"""masklab-tf: MaskLab (Chen et al., CVPR 2018) in TensorFlow 2 / tf_keras."""

__version__ = "0.1.0"
