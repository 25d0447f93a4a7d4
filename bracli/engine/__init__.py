"""The one seam between bracli and ultralytics.

- ``offline``: environment and settings that keep ultralytics offline and private (no ultralytics import).
- ``register``: makes BRA resolvable by ultralytics' YAML parser (no ultralytics import until needed).
- the other modules import ultralytics; the offline guard is applied before they do.
"""
