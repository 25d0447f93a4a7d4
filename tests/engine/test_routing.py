"""`bra predict --routing`: the module's own routes, captured during prediction and drawn over each image."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from bracli import templates
from bracli.engine import predict
from bracli.engine.routing import RoutingRecorder, bra_layers, check_routable, region_grid
from bracli.errors import UsageError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained YOLOv8n with BRA after p3 and p4 (routing is computed all the same), saved as ultralytics does."""
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("routing-model")
    cfg = templates.render("n", ["p3", "p4"], n_win=4, topk=3)
    path = folder / templates.model_filename("n", ["p3", "p4"])
    path.write_text(templates.to_yaml(cfg, "test model"))
    weights = folder / "two-bra.pt"
    YOLO(str(path)).save(weights)
    return weights


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two images of different shapes, so one is letterboxed with padding."""
    folder = tmp_path_factory.mktemp("routing-images")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"wide.jpg": (60, 120), "square.png": (96, 96)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_region_grid_follows_stride_padding_and_letterbox():
    # A 200×100 image letterboxed into 96×128: gain 0.64, 16 px of border above and below. At stride 8 the map
    # is 12×16; n_win 8 pads it to 16×16 (2×2 cells per region), so the grid reaches below the image.
    grid = region_grid((8, 8, 2, 2), (12, 16), (96, 128), (100, 200))
    assert grid.x_edges == pytest.approx([25.0 * k for k in range(9)])
    assert grid.y_edges == pytest.approx([(16.0 * k - 16) / 0.64 for k in range(9)])
    assert grid.y_edges[0] < 0 and grid.y_edges[-1] > 100  # border above, padding below
    assert grid.region_at(10, 10) == 8  # row 1 (y 0–25), column 0
    assert not grid.overlaps_image(63, 200, 100)  # the last row of regions lies wholly below the image


def test_a_grid_that_grows_with_the_input_is_drawn_region_for_region(tmp_path, images, monkeypatch):
    """With a region size the grid follows the map: a wide input gets more columns than rows, and the
    picture's grid has exactly the regions the layer routed."""
    from ultralytics import YOLO

    from bracli.engine import routing

    cfg = templates.render("n", ["p3"], n_win=2, topk=2, region_size=2)
    path = tmp_path / templates.model_filename("n", ["p3"])
    path.write_text(templates.to_yaml(cfg, "test model"))
    yolo = YOLO(str(path))
    drawn = []
    monkeypatch.setattr(routing, "draw_routing", lambda picture, path: drawn.append(picture) or path)
    recorder = RoutingRecorder(yolo)
    [result] = list(yolo.predict(source=str(images / "wide.jpg"), imgsz=128, stream=True, verbose=False,
                                 save=False))
    recorder.draw(result, tmp_path)
    [picture] = drawn
    assert recorder.captured[16].feature_hw == (8, 16)  # 64×128 input at stride 8
    assert (picture.grid.rows, picture.grid.cols) == (4, 8)  # regions of 2×2 tokens
    assert picture.routes.shape == (32, 2) and "4×8 regions of 2×2 tokens" in picture.title
    assert picture.grid.x_edges[0] == pytest.approx(0.0) and picture.grid.x_edges[-1] == pytest.approx(120.0)


def test_routable_needs_bra_and_one_forward(checkpoint):
    from bracli.engine.checkpoint import read_checkpoint

    model = read_checkpoint(checkpoint).model
    assert [(layer.index, layer.placement) for layer in bra_layers(model)] == [(16, "p3"), (20, "p4")]
    with pytest.raises(UsageError, match="augment"):
        check_routable(model, {"augment": True})
    plain = templates.render("n", [])
    from bracli.engine.models import build

    with pytest.raises(UsageError, match="no BRA layer"):
        check_routable(build(plain), {})


def test_recorder_captures_the_routes_each_layer_computed(checkpoint, images, tmp_path):
    """The recorded routes are the layer's own routing of the very input it received in that forward."""
    from bracli.engine.checkpoint import read_checkpoint

    yolo = read_checkpoint(checkpoint).yolo()
    recorder = RoutingRecorder(yolo)
    inputs, modules = {}, {}

    def watch(predictor) -> None:  # a second, independent look at what each BRA layer receives
        for layer in bra_layers(predictor.model.model):
            modules[layer.index] = layer.module
            layer.module.register_forward_pre_hook(lambda m, args, i=layer.index: inputs.__setitem__(i, args[0]))

    yolo.add_callback("on_predict_start", watch)
    [result] = list(yolo.predict(source=str(images / "wide.jpg"), imgsz=128, stream=True, verbose=False,
                                 save=False))
    assert recorder.input_hw == (64, 128)  # 60×120 letterboxed at 128, rounded up to the stride (rect)
    assert recorder.captured[16].feature_hw == (8, 16) and recorder.captured[20].feature_hw == (4, 8)
    for index, module in modules.items():
        own = module.route(inputs[index]).numpy()
        assert own.shape == (1, 16, 3)
        assert np.array_equal(recorder.captured[index].routes, own)
    pictures = recorder.draw(result, tmp_path)
    recorder.close()
    assert [p.name for p in pictures] == ["wide-layer16.png", "wide-layer20.png"]


def test_each_result_of_a_batch_gets_its_own_routes(checkpoint, images, tmp_path, monkeypatch):
    from bracli.engine import routing
    from bracli.engine.checkpoint import read_checkpoint

    drawn = []
    monkeypatch.setattr(routing, "draw_routing", lambda picture, path: drawn.append(picture) or path)
    yolo = read_checkpoint(checkpoint).yolo()
    recorder = RoutingRecorder(yolo)
    for result in yolo.predict(source=str(images), imgsz=128, stream=True, verbose=False, save=False, batch=2):
        recorder.draw(result, tmp_path)
    batch_routes = recorder.captured[16].routes
    assert batch_routes.shape[0] == 2 and not np.array_equal(batch_routes[0], batch_routes[1])
    layer16 = [picture.routes for picture in drawn if "layer 16 " in picture.title]
    assert len(layer16) == 2
    assert np.array_equal(layer16[0], batch_routes[0]) and np.array_equal(layer16[1], batch_routes[1])


def test_predict_writes_one_picture_per_image_and_layer(checkpoint, images, tmp_path):
    """Both images in one batch: each result takes its own row of the batch's routes."""
    result = predict.predict(str(images), checkpoint, imgsz=128, project=tmp_path, routing=True,
                             extras={"batch": 2})
    assert len(result.predictions) == 2
    folder = result.save_dir / "routing"
    assert sorted(p.name for p in folder.iterdir()) == ["square-layer16.png", "square-layer20.png",
                                                       "wide-layer16.png", "wide-layer20.png"]
    for prediction in result.predictions:
        assert len(prediction.routing) == 2
        with Image.open(prediction.routing[0]) as picture:
            assert picture.format == "PNG" and picture.width > 600
    assert json.loads(json.dumps(result.to_dict()))["predictions"][0]["routing"]


def test_routing_without_saving_predictions_still_writes_pictures(checkpoint, images, tmp_path):
    result = predict.predict(str(images / "square.png"), checkpoint, imgsz=128, project=tmp_path, save=False,
                             routing_query=(10.0, 90.0))
    assert result.save_dir is None
    [prediction] = result.predictions
    assert [p.split("/")[-1] for p in prediction.routing] == ["square-layer16.png", "square-layer20.png"]


def test_video_frames_are_drawn_at_vid_stride(checkpoint, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    rng = np.random.default_rng(1)
    for _ in range(4):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()
    result = predict.predict(str(video), checkpoint, imgsz=96, project=tmp_path, save=False, routing=True,
                             extras={"vid_stride": 2})
    names = sorted(p.split("/")[-1] for prediction in result.predictions for p in prediction.routing)
    assert names == ["clip_1-layer16.png", "clip_1-layer20.png", "clip_2-layer16.png", "clip_2-layer20.png"]


def test_recorder_does_not_change_the_prediction(checkpoint, images, tmp_path):
    plain = predict.predict(str(images), checkpoint, imgsz=128, project=tmp_path, save=False, conf=0.001)
    routed = predict.predict(str(images), checkpoint, imgsz=128, project=tmp_path, save=False, conf=0.001,
                             routing=True)
    assert [p.counts for p in plain.predictions] == [p.counts for p in routed.predictions]


def test_command_line(bra, checkpoint, images, tmp_path):
    r = bra("predict", images / "wide.jpg", "--model", checkpoint, "--imgsz", "128", "--project", tmp_path,
            "--routing", "--json", "-")
    assert r.code == 0, r.err
    [prediction] = json.loads(r.out)["predictions"]  # stdout stays pure JSON
    assert len(prediction["routing"]) == 2
    assert "routing pictures saved to" in r.err


@pytest.mark.parametrize("query", ["12", "a,b", "-1,5", "nan,3"])
def test_bad_routing_query_is_a_usage_error(bra, checkpoint, images, query):
    r = bra("predict", images / "wide.jpg", "--model", checkpoint, "--routing-query", query)
    assert r.code == 2
    assert "--routing-query" in r.err


def test_routing_needs_a_bra_model(bra, images, tmp_path):
    from ultralytics import YOLO

    cfg = tmp_path / templates.model_filename("n", [])
    cfg.write_text(templates.to_yaml(templates.render("n", []), "plain"))
    plain = tmp_path / "plain.pt"
    YOLO(str(cfg)).save(plain)
    r = bra("predict", images / "wide.jpg", "--model", plain, "--routing", "--project", tmp_path)
    assert r.code == 2
    assert "no BRA layer" in r.err
    assert not (tmp_path / "predict").exists()
