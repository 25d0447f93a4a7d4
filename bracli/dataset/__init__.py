"""Datasets: `check` finds problems in a YOLO dataset; `sample` writes the built-in shapes dataset.

Import the submodules directly (``check``, ``sample``; ``data_yaml`` for the one data.yaml reader); this
package itself stays import-free so the CLI can read its defaults without loading numpy. Nothing under
it imports ultralytics: worker processes fork from the checking process and must stay light.
"""

DEFAULT_NEAR_DUP_THRESHOLD = 8  # differing bits (of 128) up to which two images count as near-duplicates
