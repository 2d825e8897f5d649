"""Every command and Python block the docs show, and what checks it.

tests/test_docs.py extracts the commands of README.md and docs/*.md (fenced
sh, bash, shell and console blocks) and their ```python blocks. Each must
have an entry here, and each entry must still be shown by some doc, so a
command cannot be added, changed or dropped without this file saying how it
is checked. An entry is either

  Executed('tests/path.py::test_name'): that test runs it, with its own
    data in place of the doc's example paths (tests/test_docs.py checks
    that the test function exists); entries naming CHEAP are run by
    tests/test_docs.py itself, exactly as shown;
  NotExecuted('reason'): what running it needs that a fast test cannot
    have, and what covers it instead.

Keys are the commands as shown: continuation lines joined, `$ ` prompts and
trailing `# comments` removed, blanks collapsed. A Python block's key is
'python: ' and its first line that is neither blank, a comment nor an
import.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Executed:
  """Run by `test` ('tests/x.py::test_name')."""
  test: str


@dataclasses.dataclass(frozen=True)
class NotExecuted:
  """Not run by any test, for `reason`."""
  reason: str


# tests/test_docs.py runs these itself (each well under a second).
CHEAP = 'tests/test_docs.py::test_cheap_commands_run_as_shown'

_STARDIST = 'needs the stardist wheel (its nuclei image), not installed here'

_EXPORT_AND_EVALUATE = ('tests/tools/test_run_configs.py::'
                        'test_export_and_evaluate_as_the_readme_runs_them')

_ONNX = ('tests/serving/test_golden_checkpoint.py::'
         'test_predict_onnx_without_tensorflow_writes_the_saved_models_'
         'results')

_TTA = 'tests/serving/test_predict_model_dir.py::'

_PRETRAINING = 'tests/training/test_semantic_pretraining.py::'

COMMANDS = {
    # docs/training.md: semantic-segmentation pretraining.
    '.venv/bin/python bin/train --flagfile=configs/shapes_cpu.flags '
    '--model_dir=runs/shapes_seg --mask_head=semantic_segmentation '
    '--train_steps=100 --train_annotations=demo_data/train/annotations.json '
    '--train_images=demo_data/train/images '
    '--val_annotations=demo_data/val/annotations.json '
    '--val_images=demo_data/val/images': Executed(
        _PRETRAINING + 'test_bin_train_runs_the_stage_and_scores_it_by_mean_'
        'iou'),
    '.venv/bin/python bin/train --flagfile=configs/shapes_cpu.flags '
    '--model_dir=runs/shapes_from_seg --init_checkpoint=runs/shapes_seg '
    '--train_annotations=demo_data/train/annotations.json '
    '--train_images=demo_data/train/images': Executed(
        _PRETRAINING + 'test_masklab_from_the_stage_has_its_semantic_map'),
    # docs/training.md: test-time augmentation.
    '.venv/bin/python bin/evaluate --model_dir=runs/shapes '
    '--annotations=demo_data/val/annotations.json '
    '--images=demo_data/val/images --output_dir=runs/shapes/tta '
    '--test_scales=0.8,1,1.2 --test_flip': Executed(
        _TTA + 'test_evaluate_scores_the_merged_passes'),
    '.venv/bin/python bin/predict --model_dir=runs/shapes --images=photos/ '
    '--output_dir=predictions --test_scales=0.8,1,1.2 --test_flip': Executed(
        _TTA + 'test_a_checkpoint_predicts_what_its_savedmodel_recorded_and_'
        'tta_changes_it'),
    '.venv/bin/python bin/export --model_dir=runs/shapes '
    '--export_dir=exported/shapes_tta/1 --test_scales=0.8,1,1.2 --test_flip':
        NotExecuted(
            'writing a SavedModel traces both signatures with every pass '
            '(about a minute); tests/postprocess/test_test_time_'
            'augmentation.py::test_the_savedmodel_signatures_run_the_passes '
            'runs the serving module bin/export writes, in process'),
    # README.md
    'make demo': NotExecuted(
        'trains for about 10 minutes; tests/tools/test_demo.py runs bin/demo '
        'end to end on a tiny budget (slow marker)'),
    'make test': NotExecuted(
        'the whole suite, this test among it; CI runs exactly it '
        '(.ci/run)'),
    '.venv/bin/saved_model_cli show --dir demo_data/export/1 --all':
        Executed('tests/serving/test_export.py::'
                 'test_saved_model_cli_shows_and_runs_it'),
    '.venv/bin/python bin/check_dataset --help': Executed(CHEAP),
    "python: model = masklab_tf.load_model('demo_data/model')  "
    '# configs.json + latest checkpoint':
        Executed('tests/serving/test_export.py::'
                 'test_readme_load_model_snippet_runs'),
    # docs/data.md
    '.venv/bin/python bin/check_dataset --annotations=instances.json '
    '--images=images/ [--strict]': NotExecuted(
        "the user's dataset (placeholder paths); tests/tools/"
        'test_check_dataset.py runs the tool on broken datasets'),
    '.venv/bin/python bin/make_tfrecords --annotations=instances.json '
    '--images=images/ --output_prefix=records/train': NotExecuted(
        "the user's dataset (placeholder paths); tests/data/test_tfrecord.py "
        'writes and reads shards'),
    '.venv/bin/python bin/make_shapes --output_dir=demo_data': NotExecuted(
        'writes 360 images (about 7 s on 2 cores); bin/demo makes the same '
        'set (tests/tools/test_demo.py) and tests/data/test_synthetic.py '
        'checks it'),
    # docs/training.md
    '.venv/bin/python bin/train --flagfile=configs/shapes_cpu.flags '
    '--model_dir=runs/shapes '
    '--train_annotations=demo_data/train/annotations.json '
    '--train_images=demo_data/train/images '
    '--val_annotations=demo_data/val/annotations.json '
    '--val_images=demo_data/val/images --train_steps=300 --eval_every=100':
        NotExecuted(
            'trains 300 steps (minutes); tests/tools/test_train_start.py '
            'runs bin/train on a tiny model'),
    # docs/reproducibility.md
    '.venv/bin/python bin/train --flagfile=configs/shapes_demo.flags '
    '--train_steps=80 --log_every=20 --model_dir=runs/cost '
    '--train_annotations=demo_data/train/annotations.json '
    '--train_images=demo_data/train/images --deterministic=false':
        NotExecuted(
            'trains 80 steps (2 minutes) for a timing; '
            'tests/training/test_determinism.py runs --deterministic '
            'trainings'),
    '.venv/bin/python bin/train --flagfile=configs/shapes_demo.flags '
    '--deterministic=false --train_steps=300 --seed=1 '
    '--model_dir=runs/seed1 '
    '--train_annotations=demo_data/train/annotations.json '
    '--train_images=demo_data/train/images '
    '--val_annotations=demo_data/val/annotations.json '
    '--val_images=demo_data/val/images': NotExecuted(
        'trains 300 steps (7 minutes on 2 cores) for a spread; '
        'tests/tools/test_train_start.py runs bin/train on a tiny model'),
    '.venv/bin/python -m benchmarks accuracy --systems=masklab --seed=0 '
    '--budget_mode=cpu --budget_s=1500 --work_dir=runs/spread': NotExecuted(
        'trains for 1500 CPU seconds on 2000 images for a spread; '
        'tests/benchmarks/test_accuracy.py runs the suite in --quick mode'),
    # docs/ablations.md.
    '.venv/bin/python -m benchmarks ablations --tables=table6 '
    '--seeds=0,1,2 --work_dir=runs/ablations --publish=hard_shapes':
        NotExecuted('15 runs of 1000 steps on 2000 images (2.5 hours on a '
                    '2-core Xeon); tests/benchmarks/test_ablations.py '
                    'continues from a published result and (make test-all) '
                    'runs a pretraining row in --quick mode'),
    '.venv/bin/python bin/evaluate --flagfile=configs/shapes_cpu.flags '
    '--model_dir=runs/shapes --annotations=demo_data/val/annotations.json '
    '--images=demo_data/val/images': Executed(_EXPORT_AND_EVALUATE),
    # README.md and docs/serving.md: the ONNX export (the fixture runs
    # bin/export --format=onnx in process, the test bin/predict --onnx
    # where TensorFlow cannot be imported).
    '.venv/bin/python bin/export --format=onnx --model_dir=demo_data/model '
    '--export_dir=demo_data/export/onnx': Executed(_ONNX),
    '.venv/bin/python bin/predict --onnx=demo_data/export/onnx/model.onnx '
    '--images=demo_data/val/images --output_dir=demo_data/predict_onnx':
        Executed(_ONNX),
    # docs/own-data.md
    '.venv/bin/python bin/check_dataset '
    '--annotations=demo_data/train/annotations.json '
    '--images=demo_data/train/images '
    '--suggest_flags=demo_data/suggested.flags': Executed(
        'tests/data/test_suggest.py::'
        'test_the_shapes_set_gets_shapes_cpus_data_settings'),
    # docs/serving.md
    "python: model = onnx_model.OnnxModel("
    "'demo_data/export/onnx/model.onnx')": Executed(
        'tests/serving/test_golden_checkpoint.py::'
        'test_onnx_runtime_gives_the_saved_models_results'),
    '.venv/bin/python bin/export --flagfile=configs/shapes_cpu.flags '
    '--model_dir=demo_data/model --export_dir=demo_data/export/1':
        Executed(_EXPORT_AND_EVALUATE),
    '.venv/bin/python bin/predict --saved_model=demo_data/export/1 '
    '--images=demo_data/val/images --output_dir=demo_data/predict '
    '[--image_ids_from=demo_data/val/annotations.json]':
        Executed('tests/serving/test_predict.py::'
                 'test_predict_writes_coco_results_and_pictures_and_skips_'
                 'bad_files'),
    '.venv/bin/python bin/evaluate --flagfile=configs/shapes_cpu.flags '
    '--saved_model=demo_data/export/1 '
    '--annotations=demo_data/val/annotations.json '
    '--images=demo_data/val/images --output_dir=out': NotExecuted(
        "needs the demo's export; tests/serving/test_export.py::"
        'test_evaluating_the_saved_model_equals_the_checkpoint_path runs '
        "bin/evaluate's --saved_model path in process"),
    # docs/systems.md
    "python: data_cfg, geometry, model_cfg, _ = config.from_flagfile("
    "'configs/shapes_cpu.flags')": NotExecuted(
        'a sketch over a batch it does not define (images, sizes, batch); '
        'tests/modeling/systems/test_masklab.py builds the models and pins '
        'the losses'),
    # docs/design.md
    '''python: """Mask R-CNN's mask head (He et al., ICCV 2017): convs on '''
    '''res4 crops."""''':
        Executed('tests/modeling/heads/test_design_doc_example.py::'
                 'test_the_worked_example_head_trains_and_infers'),
    "python: 'mask_rcnn': mask_rcnn_head.MaskRcnnHead,":
        Executed('tests/modeling/heads/test_design_doc_example.py::'
                 'test_the_worked_example_head_trains_and_infers'),
    # docs/own-data.md: the nuclei example needs the stardist wheel, which
    # nothing here may download at run time; bin/labels_to_coco itself is
    # tested on a small label image (tests/tools/test_labels_to_coco.py),
    # the other tools by the tests named for the demo's commands.
    '.venv/bin/pip download stardist==0.9.2 --no-deps -d /tmp/sd':
        NotExecuted(_STARDIST),
    "unzip -o -j /tmp/sd/stardist-0.9.2-*.whl 'stardist/data/images/*2d.tif' "
    '-d nuclei_raw': NotExecuted(_STARDIST),
    ".venv/bin/python bin/labels_to_coco --images=nuclei_raw/img2d.tif "
    "--labels=nuclei_raw/mask2d.tif --category=nucleus --columns=0:256 "
    "--tile_size=256 --cut_instances=clip --output_dir=nuclei/train":
        NotExecuted(_STARDIST + '; tests/tools/test_labels_to_coco.py runs '
                    '--columns and --cut_instances on a label image of its '
                    'own'),
    ".venv/bin/python bin/labels_to_coco --images=nuclei_raw/img2d.tif "
    "--labels=nuclei_raw/mask2d.tif --category=nucleus --columns=256: "
    "--cut_instances=crowd --output_dir=nuclei/val": NotExecuted(
        _STARDIST + '; tests/tools/test_labels_to_coco.py runs --columns and '
        '--cut_instances on a label image of its own'),
    '.venv/bin/python -m benchmarks accuracy --data_dir=nuclei '
    '--config=configs/nuclei_cpu.flags '
    '--systems=masklab,semantic_components,connected_components,'
    'model_garden --model_garden_recipe=data --budget_s=1500 '
    '--budget_mode=cpu --work_dir=runs/nuclei_bench': NotExecuted(
        _STARDIST + '; trains two systems for 25 CPU minutes each'),
    '.venv/bin/python bin/predict --model_dir=runs/nuclei_bench/models/'
    'masklab --images=nuclei/val/images --output_dir=nuclei/pictures':
        NotExecuted(_STARDIST + '; tests/serving/test_predict_model_dir.py '
                    'runs bin/predict --model_dir on the golden checkpoint'),
}
