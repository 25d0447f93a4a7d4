"""bracli: YOLOv8 with BiFormer's Bi-Level Routing Attention, from dataset to deployment.

``import bracli`` is all a Python user needs: it makes ``BiLevelRoutingAttention`` resolvable by
ultralytics' YAML parser the moment ultralytics' model module is (or already was) imported,
without importing torch or ultralytics itself — so ``bra --help`` stays instant.
"""

from bracli.engine.register import install_import_hook

__version__ = "0.1.0"

install_import_hook()
