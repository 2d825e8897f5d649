"""Configs: flags -> dataclasses -> configs.json and back, one flag per
field, help texts from the docstrings, and configs.json files of the layout
before DataSplitConfig."""

import dataclasses
import glob
import json
import os
import tarfile
import typing

from absl import flags
import pytest

from masklab_tf import config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_MODEL = os.path.join(REPO, 'tests', 'testdata', 'golden',
                            'model.tar.xz')


def leaf_fields(cls, prefix='', path=()):
  """(flag name, attribute path, type, default) of every flag-backed field,
  nested dataclasses flattened as define_flags flattens them."""
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(cls):
    kind = hints[field.name]
    if dataclasses.is_dataclass(kind):
      yield from leaf_fields(kind, f'{prefix}{field.name}_',
                             path + (field.name,))
    else:
      default = (field.default if field.default is not dataclasses.MISSING
                 else field.default_factory())
      yield prefix + field.name, path + (field.name,), kind, default


def all_leaf_fields():
  for section, cls in zip(config.Configs._fields, config.CONFIG_CLASSES):
    for name, path, kind, default in leaf_fields(cls):
      yield name, (section,) + path, kind, default


def other_value(name, kind, default):
  """A value unlike the default, and its command-line spelling."""
  if kind is bool:
    return (not default), str(not default).lower()
  if kind is int:
    return default + 3, str(default + 3)
  if kind is float:
    return default + 0.25, str(default + 0.25)
  if kind is str:
    return f'{default}{name}_value', f'{default}{name}_value'
  (item,) = set(typing.get_args(kind)) - {Ellipsis}
  value = tuple(item(v) for v in (2, 6)) + default
  return value, ','.join(str(v) for v in value)


def get(configs, path):
  value = configs
  for name in path:
    value = getattr(value, name)
  return value


def test_every_field_goes_from_flags_to_json_and_back(tmp_path):
  expected, argv = {}, []
  for name, path, kind, default in all_leaf_fields():
    value, spelled = other_value(name, kind, default)
    expected[path] = value
    argv.append(f'--{name}={spelled}')
  flagfile = tmp_path / 'all.flags'
  flagfile.write_text('\n'.join(argv) + '\n')
  configs = config.from_flagfile(str(flagfile))
  for path, value in expected.items():
    assert get(configs, path) == value, path
  path = str(tmp_path / config.CONFIGS_FILE)
  config.to_json(configs, path)
  assert config.from_json(path) == configs
  # Nothing but the file itself is left in the folder.
  assert sorted(os.listdir(tmp_path)) == sorted(['all.flags',
                                                 config.CONFIGS_FILE])


def test_defaults_are_the_dataclasses_and_each_flag_is_one_field():
  flag_values = flags.FlagValues()
  config.define_all_flags(flag_values)
  names = [name for name, _, _, _ in all_leaf_fields()]
  assert sorted(flag_values) == sorted(names)
  flag_values(['test'])
  assert config.all_from_flags(flag_values) == config.Configs(
      *(cls() for cls in config.CONFIG_CLASSES))


def test_data_sets_have_flat_flags():
  configs = config.from_flagfile(os.devnull, (
      '--train_annotations=t.json', '--train_images=t/',
      '--train_tfrecords=r/train-*', '--train_categories=r/c.json',
      '--val_annotations=v.json', '--val_images=v/'))
  assert configs.data.train == config.DataSplitConfig(
      't.json', 't/', 'r/train-*', 'r/c.json')
  assert configs.data.val == config.DataSplitConfig('v.json', 'v/')


def test_one_owner_per_fact():
  fields = {cls: {f.name for f in dataclasses.fields(cls)}
            for cls in config.CONFIG_CLASSES}
  assert 'output_stride' not in fields[config.DataConfig]
  assert 'seed' not in fields[config.DataConfig]
  assert not {f for f in fields[config.TrainConfig]
              if f.startswith(('train_', 'val_'))} - {'train_steps'}


def test_a_flag_name_defined_twice_is_an_error():
  # A tool that defines a config field's name itself.
  flag_values = flags.FlagValues()
  flags.DEFINE_integer('batch_size', 4, 'Tool batch.', flag_values=flag_values)
  with pytest.raises(flags.DuplicateFlagError,
                     match=r'--batch_size .*TrainConfig\.batch_size'):
    config.define_all_flags(flag_values)
  # The configs twice on one FlagValues.
  flag_values = flags.FlagValues()
  config.define_all_flags(flag_values)
  with pytest.raises(
      flags.DuplicateFlagError,
      match=r'--train_annotations .*DataConfig\.train\.annotations'):
    config.define_all_flags(flag_values)

  # A nested set's prefixed name against a field of that name.
  @dataclasses.dataclass
  class Clash:
    """Two fields, one flag name.

    Attributes:
      train: a set.
      train_images: images.
    """
    train: config.DataSplitConfig = dataclasses.field(
        default_factory=config.DataSplitConfig)
    train_images: str = ''

  with pytest.raises(flags.DuplicateFlagError, match='--train_images'):
    config.define_flags(Clash, flags.FlagValues())


def test_every_flag_has_its_fields_help():
  for cls in (*config.CONFIG_CLASSES, config.DataSplitConfig):
    helps = config.field_helps(cls)
    # Every field, and nothing else (a renamed field leaves no stale entry).
    assert set(helps) == {f.name for f in dataclasses.fields(cls)}, cls
  flag_values = flags.FlagValues()
  config.define_all_flags(flag_values)
  for name in flag_values:
    text = flag_values[name].help
    assert len(text.split()) >= 2 and not text.endswith(f'.{name}'), name
  assert flag_values['seed'].help.startswith('global seed')
  assert 'TFRecord' in flag_values['train_tfrecords'].help
  assert flag_values['val_images'].help.startswith('the validation set')


def test_field_helps_joins_lines_and_rejects_grouped_entries():
  class Good:
    """Summary.

    Attributes:
      alpha: first line
        continued.
      beta: one line.

    Returns nothing.
    """

  assert config.field_helps(Good) == {'alpha': 'first line continued.',
                                      'beta': 'one line.'}

  class Grouped:
    """Summary.

    Attributes:
      alpha, beta: shared text.
    """

  with pytest.raises(ValueError, match='alpha, beta'):
    config.field_helps(Grouped)

  @dataclasses.dataclass
  class Undocumented:
    """Summary.

    Attributes:
      alpha: documented.
    """
    alpha: int = 0
    beta: int = 0

  with pytest.raises(ValueError, match=r'Undocumented\.beta'):
    config.define_flags(Undocumented, flags.FlagValues())


@pytest.mark.parametrize('path', sorted(glob.glob(
    os.path.join(REPO, 'configs', '*.flags'))), ids=os.path.basename)
def test_every_flags_file_parses(path):
  configs = config.from_flagfile(path)
  assert configs.model.num_classes >= 1
  with open(path) as f:
    for line in f:
      if line.startswith('--output_stride='):
        assert configs.model.output_stride == int(line.split('=')[1])


def old_layout(**changes):
  """A configs.json as written before DataSplitConfig."""
  saved = {
      'data': {'annotations': 'never_read.json', 'images': 'never_read/',
               'tfrecords': 'never_read-*', 'categories': 'records/c.json',
               'min_sizes': [128, 160], 'eval_min_size': 160,
               'max_size': 192, 'output_stride': 16, 'pad_to': [],
               'flip': False, 'max_instances': 10, 'keep_full_masks': False,
               'shuffle_buffer': 300, 'deterministic': True, 'seed': 7,
               'verify_images': 'full'},
      'geometry': {'num_directions': 4},
      'model': {'num_classes': 4, 'output_stride': 16},
      'train': {'train_annotations': 'train.json', 'train_images': 'train/',
                'train_tfrecords': 'records/train-*',
                'val_annotations': 'val.json', 'val_images': 'val/',
                'batch_size': 2, 'seed': 7},
  }
  for section, values in changes.items():
    saved[section].update(values)
  return saved


def test_old_configs_json_layout_loads(tmp_path):
  path = tmp_path / config.CONFIGS_FILE
  path.write_text(json.dumps(old_layout()))
  configs = config.from_json(str(path))
  assert configs.data == config.DataConfig(
      train=config.DataSplitConfig('train.json', 'train/', 'records/train-*',
                                   'records/c.json'),
      val=config.DataSplitConfig('val.json', 'val/'),
      min_sizes=(128, 160), eval_min_size=160, max_size=192, flip=False,
      max_instances=10, shuffle_buffer=300, verify_images='full')
  assert configs.model.output_stride == 16 and configs.model.num_classes == 4
  assert configs.train.seed == 7 and configs.train.batch_size == 2
  assert configs.train.deterministic
  assert configs.geometry.num_directions == 4
  # Written again, it is today's layout and loads the same.
  config.to_json(configs, str(path))
  saved = json.loads(path.read_text())
  assert saved['data']['train']['annotations'] == 'train.json'
  assert 'seed' not in saved['data'] and 'output_stride' not in saved['data']
  assert config.from_json(str(path)) == configs


def test_old_layout_copies_fill_in_only_what_the_owner_lacks(tmp_path):
  saved = old_layout()
  del saved['train']['seed'], saved['model']['output_stride']
  path = tmp_path / config.CONFIGS_FILE
  path.write_text(json.dumps(saved))
  configs = config.from_json(str(path))
  assert configs.train.seed == 7 and configs.model.output_stride == 16


def test_golden_configs_json_of_the_old_layout_loads(tmp_path):
  with tarfile.open(GOLDEN_MODEL) as tar:
    saved = json.load(tar.extractfile('model/configs.json'))
  assert 'output_stride' in saved['data']  # The old layout.
  path = tmp_path / config.CONFIGS_FILE
  path.write_text(json.dumps(saved))
  configs = config.from_json(str(path))
  assert configs.model.output_stride == saved['model']['output_stride']
  assert configs.train.seed == saved['train']['seed']
  assert configs.data.min_sizes == tuple(saved['data']['min_sizes'])
  assert configs.data.train == config.DataSplitConfig()


def test_to_json_replaces_the_file_whole_or_not_at_all(tmp_path):
  path = str(tmp_path / config.CONFIGS_FILE)
  configs = config.Configs(*(cls() for cls in config.CONFIG_CLASSES))
  config.to_json(configs, path)
  before = open(path).read()
  # json.dump fails midway on a value it cannot write.
  broken = configs._replace(train=dataclasses.replace(configs.train,
                                                      seed=object()))
  with pytest.raises(TypeError):
    config.to_json(broken, path)
  assert open(path).read() == before
  assert os.listdir(tmp_path) == [config.CONFIGS_FILE]
