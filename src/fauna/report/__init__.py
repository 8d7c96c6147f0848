"""The comparison report, in three rooms (and two small helpers).

- `gather`: the train, evaluate and t-SNE outputs of each backbone, matched by name, read
  into one row per backbone (numbers, image files, the degenerate-model verdicts; `extras`
  reads the per-class scores, misclassified thumbnails and learning curves);
- `decision`: who may be champion and who is (a flagged model never is), which dataset
  this is and whether the paper's numbers apply to it; the report's data (`report.json`)
  and its machine-readable summary (`metrics.json`);
- `render`: that data through Jinja2 templates (`templates/`) into report.md and one
  self-contained report.html (images inlined); also the t-SNE step's page. Its tables are
  declared in `tables`; `uncertainty` says how sure the numbers are: chance, test size,
  intervals.
"""
