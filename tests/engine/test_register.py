"""Registration: `import bracli` makes BRA resolvable by ultralytics, whichever is imported first."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bracli import templates


@pytest.fixture(scope="module")
def bra_yaml(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("yaml")
    path = folder / templates.model_filename("n", ["p3"])
    path.write_text(templates.to_yaml(templates.render("n", ["p3"]), "test"))
    return path


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env_code = f"import os; os.environ['YOLO_OFFLINE'] = '1'; os.environ['YOLO_CONFIG_DIR'] = {str(tmp_path)!r}\n"
    return subprocess.run([sys.executable, "-c", env_code + textwrap.dedent(code)], capture_output=True, text=True)


@pytest.mark.parametrize("order", ["bracli-first", "ultralytics-first"])
def test_import_bracli_registers(order, bra_yaml, tmp_path):
    imports = "import bracli\nfrom ultralytics import YOLO" if order == "bracli-first" else \
        "from ultralytics import YOLO\nimport bracli"
    result = run_python(f"""
        {imports.splitlines()[0]}
        {imports.splitlines()[1]}
        model = YOLO({str(bra_yaml)!r})
        print(type(model.model.model[16]).__name__)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "BiLevelRoutingAttention"


def test_without_bracli_the_name_is_unknown(bra_yaml, tmp_path):
    result = run_python(f"""
        from ultralytics import YOLO
        try:
            YOLO({str(bra_yaml)!r})
        except KeyError as e:
            print("KeyError", e)
    """, tmp_path)
    assert "KeyError 'BiLevelRoutingAttention'" in result.stdout


def test_import_bracli_does_not_import_torch(tmp_path):
    result = run_python("""
        import sys, bracli
        print(sorted(m for m in ("torch", "ultralytics") if m in sys.modules))
    """, tmp_path)
    assert result.stdout.strip() == "[]"


def test_register_is_idempotent_and_refuses_a_foreign_class():
    from ultralytics.nn import tasks

    from bracli.engine.register import register
    from bracli.nn import BiLevelRoutingAttention

    register()
    register()
    assert tasks.BiLevelRoutingAttention is BiLevelRoutingAttention
    try:
        tasks.BiLevelRoutingAttention = object
        with pytest.raises(RuntimeError, match="different"):
            register()
    finally:
        tasks.BiLevelRoutingAttention = BiLevelRoutingAttention
