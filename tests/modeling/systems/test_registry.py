"""modeling/systems/registry: every system by name builds with the outputs
it declares; the class attributes the tools read; InstanceFCN's refusals."""

import pytest
import tf_keras

from masklab_tf import config
from masklab_tf.modeling import factory
from masklab_tf.modeling.heads import head_config
from masklab_tf.modeling.heads import masklab_head
from masklab_tf.modeling.heads import registry as heads_registry
from masklab_tf.modeling.systems import registry

# The paper family (modeling/systems/registry.py's docstring): three mask
# heads, MaskLab's two feature ablations and InstanceFCN; and the
# semantic-segmentation pretraining stage, which detects nothing.
SIX_SYSTEMS = ['biseg', 'fcis', 'instancefcn', 'masklab',
               'masklab_direction_only', 'masklab_semantic_only']
STAGES = ['semantic_segmentation']
# The mask head (and MaskLab's features) inside each Faster R-CNN system.
MASK_HEADS = {
    'masklab': ('masklab', 'both'), 'fcis': ('fcis', None),
    'biseg': ('biseg', None),
    'masklab_semantic_only': ('masklab', 'semantic'),
    'masklab_direction_only': ('masklab', 'direction'),
}


def test_the_six_systems_and_the_stage_are_registered():
  assert registry.available_systems() == sorted(SIX_SYSTEMS + STAGES)
  assert [name for name in registry.available_systems()
          if not registry.get_system(config.ModelConfig(mask_head=name))
          .has_detections] == STAGES


@pytest.fixture(scope='module')
def built(tiny):
  """{name: Models} of every registered system, each built once (a few
  seconds each) for this module's tests."""
  tf_keras.utils.set_random_seed(0)
  return {name: factory.build_models(tiny.config(mask_head=name),
                                     max_instances=tiny.max_instances)
          for name in registry.available_systems()}


@pytest.mark.parametrize('name', SIX_SYSTEMS + STAGES)
def test_every_system_builds_with_its_declared_outputs(built, name):
  """build_models(--mask_head=name) builds that system, and its inference
  graph's outputs are exactly system.inference_outputs (the keys serving
  and the evaluator read); its training graph takes system.train_inputs."""
  models = built[name]
  system = models.system
  assert system.name == name
  assert models.system is system
  assert sorted(models.inference_model.output) == sorted(
      system.inference_outputs)
  assert sorted(models.inference_model.input) == ['image', 'image_size']
  assert sorted(models.train_model.input) == sorted(system.train_inputs)
  # One set of layers: the inference graph's weights are the training
  # graph's.
  train_weights = {id(w) for w in models.train_model.weights}
  assert {id(w) for w in models.inference_model.weights} <= train_weights
  assert system.has_semantic_map == ('semantic_map' in
                                     system.inference_outputs)
  if name in ['instancefcn'] + STAGES:
    assert not [layer for layer in models.train_model.layers
                if layer.name == 'mask_head']
  else:
    head_name, features = MASK_HEADS[name]
    head = models.train_model.get_layer('mask_head')
    assert type(head) is heads_registry.MASK_HEADS[head_name]
    if features:
      assert isinstance(head, masklab_head.MaskLabHead)
      assert head.features == features


@pytest.mark.parametrize('name', SIX_SYSTEMS)
def test_class_agnostic_and_full_masks_only_for_instancefcn(tiny, name):
  """Only InstanceFCN's detections are class-agnostic segment proposals
  (scored by average recall) and only its training reads full masks."""
  system = registry.get_system(tiny.config(mask_head=name))
  assert system.class_agnostic is (name == 'instancefcn')
  assert system.needs_full_masks is (name == 'instancefcn')
  assert ('gt_masks' in system.train_inputs) is (name == 'instancefcn')


def test_model_inputs_without_gt_masks_names_them(tiny):
  """InstanceFCN given a batch without gt_masks (a pipeline without
  keep_full_masks): a KeyError naming gt_masks, not a late shape error;
  its inference inputs need no masks."""
  system = registry.get_system(tiny.config(mask_head='instancefcn'))
  batch = tiny.batch()
  assert 'gt_masks' not in batch
  with pytest.raises(KeyError, match='gt_masks') as error:
    system.model_inputs(batch, True)
  assert 'instancefcn' in str(error.value)
  assert 'keep_full_masks' in str(error.value)
  assert sorted(system.model_inputs(batch, False)) == ['image', 'image_size']


@pytest.mark.parametrize('override, flag', [
    (dict(semantic_loss_weight=1.0), '--semantic_loss_weight=1'),
    (dict(refine=False), '--refine=false'),
])
def test_instancefcn_refuses_settings_it_cannot_honour(tiny, override,
                                                        flag):
  """Asked for a semantic loss or no refinement, InstanceFCN stops with
  UnsupportedSettingError naming the flag, before building anything; the
  MaskLab system accepts the same settings."""
  with pytest.raises(head_config.UnsupportedSettingError,
                     match=flag + '.*InstanceFCN'):
    registry.get_system(tiny.config(mask_head='instancefcn', **override))
  with pytest.raises(head_config.UnsupportedSettingError, match=flag):
    factory.build_models(tiny.config(mask_head='instancefcn', **override),
                         max_instances=tiny.max_instances)
  registry.get_system(tiny.config(mask_head='masklab', **override))
  # A ValueError, as every other bad flag value is.
  assert issubclass(head_config.UnsupportedSettingError, ValueError)
