"""The assembling suite: one row per (map size, path), against (c)."""

from benchmarks.harness import results
from benchmarks.suites import assembling


def test_every_path_of_every_size_is_a_row_measured_against_c():
  rows = assembling.run_assemble_table(sizes=(8,), num_boxes=3,
                                       crop_size=5, num_runs=1, num_warmup=0,
                                       in_graph=1)
  assert [(row['map'], row['path']) for row in rows] == [
      (f"{size}x{size}", name) for size in (8,)
      for name, _, _ in assembling.PATHS]
  for row in rows:
    if row['path'].startswith('(c)'):
      assert row['speedup_vs_c'] == row['in_graph_speedup_vs_c'] == 1
      assert row['max_abs_diff_vs_c'] == 0
    elif row['path'].startswith('(d'):  # another sampling: not compared
      assert row['max_abs_diff_vs_c'] is None
    else:  # the gather paths compute what (c) does
      assert row['max_abs_diff_vs_c'] < 1e-4
    assert min(row['forward_ms'], row['in_graph_ms'],
               row['forward_backward_ms']) > 0
  results.table('paths', assembling.table(rows, 1)['table']['columns'], rows)
