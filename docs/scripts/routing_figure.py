"""Render the routing pictures of the docs, both with ``bracli.routing_figure`` (what ``bra predict --routing`` draws).

1. ``docs/img/bra-routing.png`` (docs/bra.md): the mechanism on a synthetic image. The module's q and k
   projections are the identity on mean-centred colour features pooled by 8 (a P3-sized map), so region
   affinity is plain colour similarity: a query region on a red disc routes to where red is.
2. ``docs/img/routing-sample.jpg`` (docs/routing.md): a real ``bra predict --routing`` picture (its PNG saved as
   JPEG, to keep the repository small) — a YOLOv8n with BRA after P3 trained on the built-in sample data,
   predicting one of its validation images.

Run: ``.venv/bin/python docs/scripts/routing_figure.py --model runs/detect/train/weights/best.pt`` (a model
trained on the sample at ``--imgsz 320``; the docs' was ``bra train --epochs 36 --imgsz 320 --batch 8``);
without ``--model`` only picture 1 is made.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

IMG = Path(__file__).resolve().parents[1] / "img"
SIZE, STRIDE, N_WIN, TOPK = 256, 8, 8, 4


def synthetic_image() -> np.ndarray:
    """SIZE×SIZE×3 in [0, 1]: a grey ramp, two red discs, a blue square, a green bar."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    image = np.repeat((0.35 + 0.3 * xs / SIZE)[..., None], 3, axis=-1)
    shapes = [((ys - 60) ** 2 + (xs - 70) ** 2 < 34**2, (0.9, 0.15, 0.1)),
              ((ys - 185) ** 2 + (xs - 190) ** 2 < 40**2, (0.85, 0.1, 0.15)),
              ((ys > 150) & (ys < 230) & (xs > 30) & (xs < 110), (0.1, 0.25, 0.9)),
              ((ys > 40) & (ys < 80) & (xs > 150) & (xs < 240), (0.15, 0.8, 0.2))]
    for mask, rgb in shapes:
        image[mask] = rgb
    return image


def mechanism(out: Path) -> Path:
    import torch
    import torch.nn.functional as F

    from bracli.nn import BiLevelRoutingAttention
    from bracli.routing_figure import RegionGrid, RoutingPicture, draw_routing

    image = synthetic_image()
    pooled = F.avg_pool2d(torch.from_numpy(image).permute(2, 0, 1)[None], STRIDE)  # 1×3×32×32, a P3-sized map
    features = pooled - pooled.mean(dim=(2, 3), keepdim=True)  # centred: affinity = colour similarity
    module = BiLevelRoutingAttention(3, n_win=N_WIN, num_heads=1, topk=TOPK)
    with torch.no_grad():  # q, k and v are the input features themselves
        module.qkv.qkv.weight.copy_(torch.eye(3).repeat(3, 1))
        module.qkv.qkv.bias.zero_()
    routes = module.route(features)[0].numpy()
    edges = tuple(float(k * SIZE / N_WIN) for k in range(N_WIN + 1))
    grid = RegionGrid(edges, edges)
    picture = RoutingPicture(image=(image * 255).astype(np.uint8), grid=grid, routes=routes,
                             query=grid.region_at(70, 60), query_note="on the first red disc",
                             title="synthetic 256×256 image, map 32×32 at stride 8 · q = k = centred colour, so "
                                   "affinity = colour similarity · 8×8 regions, top-4")
    return draw_routing(picture, out, force=True)


def real(model: Path, out: Path, image: str, imgsz: int) -> Path:
    from bracli.dataset.sample import default_sample
    from bracli.engine.setup import setup

    setup()  # before any engine module: they import ultralytics
    from bracli.engine import predict

    source = default_sample().parent / "images" / "val" / image
    with tempfile.TemporaryDirectory(prefix="bracli-routing-") as tmp:
        result = predict.predict(str(source), model, imgsz=imgsz, project=tmp, save=False, routing=True)
        [prediction] = result.predictions
        print(f"{image}: {prediction.counts}")
        with Image.open(prediction.routing[0]) as picture:  # the sample's noisy images make a ~0.9 MB PNG
            picture.convert("RGB").save(out, quality=90)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a checkpoint trained on the sample data (BRA after p3)")
    parser.add_argument("--image", default="val_00005.jpg", help="a validation image of the sample")
    parser.add_argument("--imgsz", type=int, default=320)
    args = parser.parse_args()
    print(mechanism(IMG / "bra-routing.png"))
    if args.model is not None:
        print(real(args.model, IMG / "routing-sample.jpg", args.image, args.imgsz))


if __name__ == "__main__":
    main()
