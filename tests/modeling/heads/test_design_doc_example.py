"""docs/design.md's worked example runs: adding a mask head is one file plus
one registry line, and the new head trains, infers and refuses what it
cannot do."""

import os
import re
import types

import numpy as np
import pytest
import tf_keras

from masklab_tf.modeling import factory
from masklab_tf.modeling.heads import head_config
from masklab_tf.modeling.heads import registry as heads_registry

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))), 'docs', 'design.md')
MARK = '<!-- worked example: masklab_tf/modeling/heads/mask_rcnn_head.py -->'


def example_module():
  with open(DOC) as f:
    text = f.read()
  block = re.search(re.escape(MARK) + r'\n```python\n(.*?)```', text, re.S)
  assert block, 'docs/design.md lost its worked example'
  module = types.ModuleType('mask_rcnn_head')
  exec(compile(block.group(1), DOC, 'exec'), module.__dict__)  # pylint: disable=exec-used
  return module


@pytest.fixture(scope='module')
def registered():
  """The example head, registered as the doc says, for this module."""
  module = example_module()
  heads_registry.MASK_HEADS['mask_rcnn'] = module.MaskRcnnHead
  yield module
  del heads_registry.MASK_HEADS['mask_rcnn']


def test_the_worked_example_head_trains_and_infers(registered, tiny):
  tf_keras.utils.set_random_seed(4)
  models = factory.build_models(tiny.config(mask_head='mask_rcnn'),
                                max_instances=tiny.max_instances)
  assert isinstance(models.train_model.get_layer('mask_head'),
                    registered.MaskRcnnHead)
  batch = tiny.batch()
  history = tiny.sgd_steps(models, batch, 8)
  assert float(history[-1]['mask_coarse']) < float(
      history[0]['mask_coarse'])
  assert all(np.isfinite(float(h['total'])) for h in history)
  out = models.inference_model(models.system.model_inputs(batch, False))
  assert out['detection_masks'].shape == (2, 5, 41, 41)
  assert out['semantic_map'].shape == (2, 64, 64)


@pytest.mark.parametrize('setting, message', [
    (dict(mask_features='semantic'),
     'the mask_rcnn mask head has no MaskLab feature crops to ablate'),
    (dict(direction_loss_weight=1.0),
     'the mask_rcnn mask head predicts no direction_logits'),
])
def test_the_worked_example_refuses_what_it_cannot_do(registered, tiny,
                                                      setting, message):
  del registered
  with pytest.raises(head_config.UnsupportedSettingError, match=message):
    factory.build_models(tiny.config(mask_head='mask_rcnn', **setting),
                         max_instances=tiny.max_instances)
