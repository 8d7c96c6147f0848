"""The KServe side of `fauna serve`: a custom `kserve.Model` under `kserve.ModelServer`.

    V1  POST /v1/models/<name>:predict   {"instances": [{"b64": "<JPEG/PNG>"}, ...]}
        (or the raw image as the body, Content-Type image/jpeg or image/png)
        -> {"predictions": [{"top": [{"label", "name", "probability"}, ...]}, ...],
            "model_uri"}
    V2  POST /v2/models/<name>/infer     one BYTES input, shape [n] (base64 in JSON, or
        the binary tensor extension) -> outputs `label` (BYTES) and `probability` (FP32),
        both [n, k]
    GET /v1/models/<name>/ready, /v2/models/<name>/ready: answered only once a model is
        loaded (the server listens after the load).

Images of concurrent requests are batched (up to --max-batch images, waiting at most
--max-latency-ms for more) into one model call in a worker thread, so the event loop
keeps accepting; --max-batch 1 turns batching off. Every request uses the model that was
current when it arrived: a champion reload swaps the reference, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from typing import Any

from fauna.config import Config
from fauna.data.dataset import display_name
from fauna.errors import FaunaError
from fauna.serving.predictor import (
    BadRequest,
    ChampionFollower,
    Limits,
    ServedModel,
    Top,
    champion_source,
    check_count,
    images_from_v1,
    images_from_v2,
    load_served,
)

log = logging.getLogger(__name__)

DEFAULT_NAME = "fauna"
DEFAULT_MAX_BYTES = 20_000_000


class ServeError(FaunaError):
    """`fauna serve` cannot start (no kserve, no model)."""


def import_kserve() -> Any:
    """kserve, imported with an empty argv: its module parses sys.argv on import and would
    take `fauna serve`'s own flags (argparse prefix matching) for its own."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve
    except ImportError:
        raise ServeError(
            "fauna serve needs KServe: pip install 'fauna[serve]' (the serving image has it)"
        ) from None
    finally:
        sys.argv = saved
    return kserve


class OneLineRefusals(logging.Filter):
    """KServe logs every refused request (InvalidInput) with its traceback: one line instead."""

    def __init__(self, refused: type) -> None:
        super().__init__()
        self.refused = refused

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, self.refused):
            record.msg, record.args, record.exc_info = f"refused: {exc}", (), None
        return True


class Batcher:
    """Collects the images of concurrent requests into one model call per batch."""

    def __init__(self, max_batch: int, max_latency_s: float) -> None:
        self.max_batch, self.max_latency_s = max_batch, max_latency_s
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def probabilities(self, served: ServedModel, pixels: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        if self.max_batch <= 1:
            return await loop.run_in_executor(None, served.probabilities, pixels)
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        future = loop.create_future()
        await self._queue.put((served, pixels, future))
        return await future

    async def _collect(self) -> list[tuple[ServedModel, list[Any], asyncio.Future]]:
        loop = asyncio.get_running_loop()
        items = [await self._queue.get()]
        count = len(items[0][1])
        deadline = loop.time() + self.max_latency_s
        while count < self.max_batch and (left := deadline - loop.time()) > 0:
            try:
                item = await asyncio.wait_for(self._queue.get(), left)
            except asyncio.TimeoutError:
                break
            items.append(item)
            count += len(item[1])
        return items

    async def _run(self) -> None:
        import numpy as np

        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            # Around a reload one batch may hold requests for two models: one call each.
            for served in {id(i[0]): i[0] for i in items}.values():
                mine = [i for i in items if i[0] is served]
                pixels = [p for i in mine for p in i[1]]
                try:
                    probs = await loop.run_in_executor(None, served.probabilities, pixels)
                except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
                    for _, _, future in mine:
                        future.set_exception(exc)
                    continue
                ends = np.cumsum([len(i[1]) for i in mine])[:-1]
                for (_, _, future), part in zip(mine, np.split(probs, ends), strict=True):
                    future.set_result(part)


def build_model_class(kserve: Any) -> type:
    """The kserve.Model subclass (built here so that importing this module needs no kserve)."""
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class FaunaModel(kserve.Model):
        def __init__(self, name: str, served: ServedModel, limits: Limits, top_k: int, batcher):
            super().__init__(name)
            self.served, self.limits, self.top_k, self.batcher = served, limits, top_k, batcher
            self.ready = True

        def swap(self, served: ServedModel) -> None:
            self.served = served  # requests already running keep the model they took

        async def classify(self, images: list[bytes]) -> tuple[ServedModel, list[Top]]:
            served = self.served
            loop = asyncio.get_running_loop()
            check_count(images, self.limits)
            pixels = await loop.run_in_executor(None, self._pixels, served, images)
            probs = await self.batcher.probabilities(served, pixels)
            return served, served.top(probs, self.top_k)

        def _pixels(self, served: ServedModel, images: list[bytes]) -> list[Any]:
            return [served.pixels(d, self.limits, f"image {i}") for i, d in enumerate(images)]

        async def predict(self, payload, headers=None, response_headers=None):
            try:
                if isinstance(payload, InferRequest):
                    served, tops = await self.classify(images_from_v2(payload.inputs))
                    return self._v2_response(payload, served, tops)
                served, tops = await self.classify(images_from_v1(payload))
            except BadRequest as exc:
                raise InvalidInput(str(exc)) from None
            predictions = [
                {
                    "top": [
                        {"label": label, "name": display_name(label), "probability": p}
                        for label, p in top
                    ]
                }
                for top in tops
            ]
            return {"predictions": predictions, "model_uri": served.source}

        def _v2_response(self, request, served: ServedModel, tops: list[Top]):
            shape = [len(tops), len(tops[0])]
            labels = [label for top in tops for label, _ in top]
            probs = [p for top in tops for _, p in top]
            outputs = [
                InferOutput("label", shape, "BYTES", labels),
                InferOutput("probability", shape, "FP32", probs),
            ]
            return InferResponse(
                request.id or str(uuid.uuid4()),
                self.name,
                outputs,
                parameters={"model_uri": served.source},
            )

    return FaunaModel


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--model",
        default="champion",
        help="model folder, s3://bucket/prefix of one, 'champion' (default: followed as it "
        "moves) or 'champion:<dataset>'",
    )
    parser.add_argument("--name", default=DEFAULT_NAME, help="the model name in the URLs")
    parser.add_argument("--http-port", type=int, default=8080, help="HTTP port (KServe: 8080)")
    parser.add_argument("--top-k", type=int, default=3, help="species per image")
    parser.add_argument(
        "--max-batch", type=int, default=16, help="images per model call (1 = no batching)"
    )
    parser.add_argument(
        "--max-latency-ms", type=float, default=5.0, help="how long a batch waits to fill"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=30.0, help="how often the champion pointer is read"
    )
    parser.add_argument(
        "--max-image-bytes", type=int, default=DEFAULT_MAX_BYTES, help="per image; larger: 400"
    )
    parser.add_argument("--max-images", type=int, default=64, help="per request; more: 400")


def follower_for(model: Any, spec: str, cfg: Config, interval: float) -> ChampionFollower | None:
    """A follower of the champion pointer when serving `champion[:<dataset>]`, else None."""
    from fauna.store.champion import DatasetId

    if champion_source(spec) is None:
        return None
    key = DatasetId.from_folder(model.served.model_dir).key
    return ChampionFollower(cfg, key, model.served.source, model.swap, interval)


def run(args: Any, cfg: Config) -> int:
    kserve = import_kserve()
    from kserve.errors import InvalidInput

    logging.getLogger("kserve").addFilter(OneLineRefusals(InvalidInput))
    served = load_served(args.model, cfg)
    log.info("serving %s as %r (%s classes)", served.source, args.name, len(served.classes))
    limits = Limits(args.max_image_bytes, cfg.data.max_image_pixels, args.max_images)
    batcher = Batcher(args.max_batch, args.max_latency_ms / 1000)
    model = build_model_class(kserve)(args.name, served, limits, args.top_k, batcher)
    follower = follower_for(model, args.model, cfg, args.poll_seconds)
    if follower is not None:
        follower.start()
    server = kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1)
    try:
        server.start([model])
    finally:
        if follower is not None:
            follower.stop()
    return 0
