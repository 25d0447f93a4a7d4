"""Datasets: `check` finds problems in a YOLO dataset; `sample` writes the built-in shapes dataset.

Import the submodules (``bracli.dataset.check``, ``bracli.dataset.sample``) directly; this package
itself stays import-free so the CLI can read its defaults without loading numpy.
"""

DEFAULT_NEAR_DUP_THRESHOLD = 8  # differing bits (of 128) up to which two images count as near-duplicates
