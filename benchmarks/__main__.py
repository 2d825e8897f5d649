"""python -m benchmarks <suite> [flags] | render | list.

  render: rewrite docs/benchmarks.md, benchmarks/RESULTS.md and the README's
    headline table from benchmarks/results/*/*.json.
  list: the suites, one line each.
  <suite> --help: a suite's flags.
"""

import importlib
import sys

from absl import app

SUITES = {
    'speed': 'inference and training speed, memory and FLOPs of MaskLab, '
             "Model Garden's and torchvision's Mask R-CNN, size by size",
    'accuracy': 'systems, ablations and baselines trained on the hard '
                'shapes set to one time budget, scored with pycocotools',
    'ablations': "the paper's ablation tables (2-6) and the semantic-"
                 'segmentation pretraining at small scale, with the seed '
                 'spread',
    'input_pipeline': 'tf.data images/s of the training pipeline',
    'assembling': 'the assembling layer: gather (XLA, plain) against '
                  'crop_and_resize, forward and backward',
    'model_cost': 'FLOPs and time of each part of the model',
    'serving': 'SavedModel export time, size and latency',
    'onnx': 'ONNX Runtime against the SavedModel: latency and size',
    'test_time': 'test-time augmentation on one checkpoint: AP and time of '
                 'each set of passes',
    'chaos': 'training killed at random moments resumes and loses nothing',
    'hostile_inputs': 'what each tool does with hostile and unusual inputs',
    'device_check': 'on a GPU never tried: the model tests that matter, '
                    'then speed and memory per precision (device_check.sh)',
}


def main() -> None:
  if len(sys.argv) < 2 or sys.argv[1] in ('-h', '--help', 'help'):
    print(__doc__.strip())
    sys.exit(0 if len(sys.argv) >= 2 else 2)
  command = sys.argv[1]
  if command == 'list':
    for name, what in SUITES.items():
      print(f'{name}: {what}')
    return
  if command == 'render':
    from benchmarks.harness import render  # pylint: disable=g-import-not-at-top
    for changed in render.write_all():
      print(f'rendered {changed}')
    return
  if command not in SUITES:
    sys.exit(f'unknown suite {command!r}: one of {", ".join(SUITES)}, or '
             'render')
  from benchmarks.harness import suite  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'benchmarks.suites.{command}')
  suite.define_common_flags()
  module.define_flags()

  def run(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    if suite.FLAGS.job:
      suite.child(module.run_job)
    else:
      module.main(argv)

  # absl parses the flags after the suite's name.
  app.run(run, argv=[f'benchmarks {command}', *sys.argv[2:]])


if __name__ == '__main__':
  main()
