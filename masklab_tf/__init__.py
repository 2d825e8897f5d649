"""masklab-tf: MaskLab (Chen et al., CVPR 2018) in TensorFlow 2 / tf_keras."""

__version__ = "0.1.0"


def __getattr__(name):
  # Lazy, so that `import masklab_tf.data...` (the data tools) does not
  # import TensorFlow.
  if name == 'load_model':
    from masklab_tf.serving.model import load_model  # pylint: disable=g-import-not-at-top
    return load_model
  raise AttributeError(f'module masklab_tf has no attribute {name!r}')
