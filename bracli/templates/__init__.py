"""Model YAMLs rendered from ultralytics' graphs, with BRA layers where asked: pure data, no torch.

``graphs`` holds the shipped family × task graphs and the placements found in them; ``render`` turns
one of them into a model dict, a file name and YAML text. Everything public is re-exported here:

    from bracli import templates
    templates.render("n", ["p3"], family="yolo11", task="segment")
"""

from __future__ import annotations

from bracli.templates.graphs import (
    FAMILIES,
    FAMILY_TITLES,
    NO_BRA,
    PLACEMENTS,
    SCALES,
    TASKS,
    Placement,
    PlacementInfo,
    Template,
    catalogue,
    check_family,
    check_scale,
    check_task,
    describe_placements,
    load_template,
    parse_placements,
    placements_for,
    scale_table,
    template,
    template_dir,
    template_file,
)
from bracli.templates.render import (
    BRA_ARGS,
    BRA_MODULE,
    METADATA_KEY,
    command_line,
    default_header,
    index_map,
    model_filename,
    render,
    scale_in_name,
    title,
    to_yaml,
)

__all__ = [
    "BRA_ARGS",
    "BRA_MODULE",
    "FAMILIES",
    "FAMILY_TITLES",
    "METADATA_KEY",
    "NO_BRA",
    "PLACEMENTS",
    "SCALES",
    "TASKS",
    "Placement",
    "PlacementInfo",
    "Template",
    "catalogue",
    "check_family",
    "check_scale",
    "check_task",
    "command_line",
    "default_header",
    "describe_placements",
    "index_map",
    "load_template",
    "model_filename",
    "parse_placements",
    "placements_for",
    "render",
    "scale_in_name",
    "scale_table",
    "template",
    "template_dir",
    "template_file",
    "title",
    "to_yaml",
]
