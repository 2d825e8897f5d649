"""masklab-tf's benchmarks: `python -m benchmarks <suite> [flags]`.

harness/: what every suite shares (jobs in their own processes, the
resumable store, timing, the machine, the time budget, results as JSON and
their rendering). systems/: MaskLab, Model Garden's and torchvision's Mask
R-CNN behind one interface. suites/: one module per benchmark. results/:
the stored results the docs' tables are rendered from.
"""
