"""The one seam between bracli and ultralytics.

Call ``bracli.engine.setup.setup()`` before importing the other modules (they import ultralytics at
their top): it keeps ultralytics offline and private, turns on restricted checkpoint loading and
registers BRA. Then one module per verb — ``train``, ``val``, ``predict``, ``export`` (with ``parity``),
``cost`` (what `bra profile` measures) — built on ``checkpoint`` (read once, restricted), ``models``
(YAMLs read as data), ``data`` (data.yaml checks), ``runs`` (run folders), ``transfer`` and ``trainer``.
"""
