"""Measuring any torch module: FLOPs counted at the dispatcher (``flops``), latency and peak memory
(``runtime``), the report `bra profile` prints (``report``) and its chart (``plot``). Pure torch; no
ultralytics."""
