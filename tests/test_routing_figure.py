"""The routing picture: region geometry, counts, and a PNG that shows the query region."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bracli.errors import OutputExistsError
from bracli.routing_figure import RegionGrid, RoutingPicture, draw_routing, routed_counts


def grid4() -> RegionGrid:
    return RegionGrid(tuple(25.0 * k for k in range(5)), tuple(-10.0 + 20.0 * k for k in range(5)))


def test_region_boxes_and_lookup():
    grid = grid4()
    assert grid.box(6) == (50.0, 10.0, 75.0, 30.0)  # row 1, column 2
    assert grid.region_at(60, 20) == 6
    assert grid.region_at(-5, -50) == 0 and grid.region_at(500, 500) == 15  # beyond the grid: the nearest region
    assert grid.overlaps_image(0, 100, 50)  # row 0 spans y -10..10: partly above the image
    assert not grid.overlaps_image(12, 100, 50)  # row 3 spans y 50..70: wholly below a 50-pixel-high image
    with pytest.raises(ValueError, match="increasing"):
        RegionGrid((0.0, 1.0, 1.0), (0.0, 1.0, 2.0))


def test_a_grid_that_grew_with_the_input_has_more_columns_than_rows():
    grid = RegionGrid(tuple(10.0 * k for k in range(6)), (0.0, 10.0, 20.0, 30.0))  # 3 rows × 5 columns
    assert (grid.rows, grid.cols, grid.regions) == (3, 5, 15)
    assert grid.box(7) == (20.0, 10.0, 30.0, 20.0)  # row 1, column 2
    assert grid.region_at(45, 25) == 14 and grid.region_at(500, -5) == 4


def test_counts_sum_to_every_route():
    routes = np.array([[0, 1], [1, 2], [1, 3], [0, 1]])
    counts = routed_counts(routes, 4)
    assert counts.tolist() == [2, 4, 1, 1]
    assert counts.sum() == routes.size


def picture(query: int = 5) -> RoutingPicture:
    image = np.full((60, 100, 3), 128, dtype=np.uint8)
    routes = np.stack([np.roll(np.arange(16), -r)[:3] for r in range(16)])
    return RoutingPicture(image=image, grid=grid4(), routes=routes, query=query, query_note="a test",
                          title="test picture", box=(30.0, 15.0, 60.0, 40.0))


def test_picture_is_a_png_showing_the_query_region_and_never_overwrites(tmp_path):
    path = draw_routing(picture(), tmp_path / "r.png")
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    cyan = (pixels[..., 0] < 40) & (pixels[..., 1] > 215) & (pixels[..., 2] > 215)
    assert cyan.sum() > 50  # the query region's outline
    with pytest.raises(OutputExistsError):
        draw_routing(picture(), path)
    assert draw_routing(picture(), path, force=True) == path


def test_routes_must_match_the_grid():
    with pytest.raises(ValueError, match=r"\(16, topk\)"):
        RoutingPicture(image=np.zeros((4, 4, 3), np.uint8), grid=grid4(), routes=np.zeros((9, 2), int), query=0,
                       query_note="", title="")
    with pytest.raises(ValueError, match="query region 16"):
        picture(query=16)
