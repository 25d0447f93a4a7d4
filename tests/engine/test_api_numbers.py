"""The Python API bounds the numbers the command line bounds in its declarations, before any file is read."""

from __future__ import annotations

import re

import pytest

from bracli import options
from bracli.engine import predict, val
from bracli.errors import UsageError

MISSING = "no-such-checkpoint.pt"  # never reached: the numbers are refused first


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"conf": 2.0}, "conf=2.0 must be a number between 0 and 1"),
    ({"iou": -0.1}, "iou=-0.1 must be a number between 0 and 1"),
    ({"conf": "0.5"}, "conf='0.5' must be a number"),
    ({"batch": 0}, "batch=0 must be a whole number of images"),
    ({"batch": True}, "batch=True must be a whole number of images"),
    ({"imgsz": 0}, "--imgsz 0 is smaller than the model stride"),
])
def test_val_refuses_numbers_the_cli_would(kwargs, says):
    with pytest.raises(UsageError, match=re.escape(says)):
        val.val(MISSING, "data.yaml", **kwargs)


@pytest.mark.parametrize(("kwargs", "says"), [({"conf": -1.0}, "conf=-1.0"), ({"iou": 1.5}, "iou=1.5")])
def test_predict_refuses_thresholds_outside_0_1(kwargs, says):
    with pytest.raises(UsageError, match=says):
        predict.predict("image.jpg", MISSING, **kwargs)


@pytest.mark.parametrize("value", [0, 0.25, 1, 1.0, None])
def test_thresholds_inside_the_range_pass(value):
    options.thresholds(value, value)
    assert options.batch(1) == 1
