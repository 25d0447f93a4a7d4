"""`validate_extras`: values typed and checked by what they mean, not only by ultralytics' loose types."""

from __future__ import annotations

import pytest

from bracli.engine.extras import check_class_ids, validate_extras
from bracli.errors import UsageError


@pytest.mark.parametrize("extras, typed", [
    ({"classes": "0"}, {"classes": 0}),
    ({"classes": "[0, 2]"}, {"classes": [0, 2]}),
    ({"classes": "None"}, {"classes": None}),
    ({"freeze": "10"}, {"freeze": 10}),
    ({"freeze": "[0,1,'22.cv2']"}, {"freeze": [0, 1, "22.cv2"]}),
    ({"quantize": "16"}, {"quantize": 16}),
    ({"classes": [1]}, {"classes": [1]}),  # from Python, already typed
])
def test_values_that_mean_what_they_say_pass(extras, typed):
    assert validate_extras(extras) == typed


@pytest.mark.parametrize("extras, says", [
    ({"classes": "foo"}, "classes='foo'"),
    ({"classes": "1.5"}, "classes=1.5"),
    ({"classes": "[]"}, "classes=[]"),
    ({"classes": "False"}, "classes=False"),
    ({"freeze": "-1"}, "freeze=-1"),
    ({"freeze": "[x]"}, "freeze='[x]'"),
    ({"embed": "[1]"}, "embed= is not taken"),
    ({"cfg": "args.yaml"}, "cfg= is not taken"),
    ({"tracker": "bytetrack.yaml"}, "tracker= is not taken"),
    ({"half": "True"}, "use quantize=16"),
    ({"int8": "True"}, "use quantize=8"),
])
def test_values_that_would_break_or_bypass_bracli_are_usage_errors(extras, says):
    with pytest.raises(UsageError) as refused:
        validate_extras(extras)
    assert says in str(refused.value) and refused.value.exit_code == 2


def test_class_ids_are_checked_against_the_model_once_known():
    check_class_ids({"classes": [0, 2]}, {0: "a", 1: "b", 2: "c"})
    check_class_ids({}, {0: "a"})
    with pytest.raises(UsageError, match=r"the model has 3 classes .* no class 3, 7"):
        check_class_ids({"classes": [0, 3, 7]}, ["a", "b", "c"])
