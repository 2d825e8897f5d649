"""files.atomic_write: the target is whole or untouched, nothing is left."""

import json
import os

import pytest

from masklab_tf import files


def test_write_json_replaces_the_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / 'results.json'
  path.write_text('old')
  files.write_json(str(path), {'a': 1})
  assert json.loads(path.read_text()) == {'a': 1}
  assert os.listdir(tmp_path) == ['results.json']


def test_a_failing_write_keeps_the_old_file_and_removes_its_temporary(
    tmp_path):
  path = tmp_path / 'results.json'
  path.write_text('old')
  with pytest.raises(TypeError):
    files.write_json(str(path), {'not json': object()})
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['results.json']


def test_writers_of_one_path_use_their_own_temporary_files(tmp_path):
  path = str(tmp_path / 'x')
  assert files.temporary_path(path) != files.temporary_path(path)
  assert os.path.dirname(files.temporary_path(path)) == str(tmp_path)
