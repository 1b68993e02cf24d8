"""The HTTP face of the worker: AUTOMATIC1111's /sdapi/v1 routes, the web page at /, and the
API's documentation at /docs, served from installed files (no CDN: it works offline).

Every error a request can cause is a 4xx (or 503 when busy) with a one-line `detail` in the
API's terms; an unexpected failure is a 500 whose body says only that (the traceback goes to
the log).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Callable, Optional

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ldm.errors import LdmError
from ldm.builtin_models import DEFAULT_UPSCALER, is_installed
from ldm.hires import HIRES_UPSCALERS, works_on_latents
from ldm.formats.model_folder import ModelError
from ldm.png_info import parse_parameters
from ldm.server.a1111 import Img2ImgRequest, PngInfoRequest, Txt2ImgRequest, job_from_request, response
from ldm.server.codec import decode_image, png_base64
from ldm.server.controlnet_units import MODULE_LIST, model_list
from ldm.server.disconnect import result_for
from ldm.server.embeddings import embedding_list
from ldm.server.favicon import favicon_ico
from ldm.server.guards import ApiKeyGuard, BodyLimit
from ldm.server.loras import lora_list
from ldm.server.messages import client_message
from ldm.server.samplers import OURS_TO_A1111, sampler_list, scheduler_list
from ldm.server.system_info import CONTROLNET_API_VERSION, command_flags, memory, scripts
from ldm.server.worker import Busy, Worker
from ldm.settings import Settings

log = logging.getLogger("ldm.serve")
STATIC = resources.files("ldm.server") / "static"


@dataclass(frozen=True)
class ServerOptions:
    api_key: Optional[str] = None
    max_upload_bytes: int = 32 * 1024 * 1024
    lora_dir: Optional[str] = None  # where <lora:NAME:WEIGHT> prompt tags find NAME.safetensors
    prompt_syntax: Optional[str] = None  # how prompts are read when a request does not say; None: the model's own
    command_flags: Optional[dict] = None  # ldm-serve's arguments, for /sdapi/v1/cmd-flags


def _error(status: int, kind: str, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": message}, status_code=status, headers=headers)


def _validation_message(error: RequestValidationError) -> str:
    """Pydantic's error list as one line: "steps: Input should be a valid integer; ..."."""
    parts = []
    for each in error.errors():
        if each.get("type") == "json_invalid":
            return f"malformed JSON: {each.get('ctx', {}).get('error', each.get('msg'))}"
        where = ".".join(str(part) for part in each.get("loc", ()) if part != "body")
        parts.append(f"{where}: {each.get('msg')}" if where else str(each.get("msg")))
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI, server_folders: Callable[[], dict[str, str]]) -> None:
    """`server_folders()`: the folders (path -> name) that messages must not reveal."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_, error: RequestValidationError):
        return _error(422, "ValidationError", _validation_message(error))

    async def bad_request(_, error: Exception):
        return _error(400, type(error).__name__, client_message(str(error), server_folders()))

    app.add_exception_handler(LdmError, bad_request)
    app.add_exception_handler(ModelError, bad_request)  # a model switch to a broken folder

    @app.exception_handler(Busy)
    async def busy(_, error: Busy):
        return _error(503, "Busy", str(error), {"Retry-After": str(error.retry_after)})

    @app.exception_handler(HTTPException)
    async def http_error(_, error: HTTPException):
        return _error(error.status_code, "HTTPError", str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_, error: Exception):
        log.error("unexpected error", exc_info=error)
        return _error(500, "InternalError", "internal error; the server log has the details")


def create_app(worker: Worker, options: ServerOptions = ServerOptions()) -> FastAPI:
    # Swagger UI from fastapi-offline's files; no ReDoc: its page fetches a logo from a CDN.
    app = FastAPIOffline(
        title="ldm-serve", description="AUTOMATIC1111-compatible API on an ldm model", version="1",
        favicon_url="/favicon.ico", redoc_url=None,
    )  # fmt: skip

    def lora_folder() -> Optional[str]:
        """--lora-dir, else the loaded model's own loras/ (it changes with sd_model_checkpoint)."""
        return options.lora_dir or worker.pipeline.lora_dir

    def server_folders() -> dict[str, str]:
        folders = {str(entry.path): entry.title for entry in worker.models}
        named = {lora_folder(): "the LoRA folder", worker.pipeline.embeddings_dir: "the embeddings folder"}
        return {**folders, **{folder: name for folder, name in named.items() if folder}}

    _install_error_handlers(app, server_folders)
    app.add_middleware(BodyLimit, limit=options.max_upload_bytes)
    if options.api_key:
        app.add_middleware(ApiKeyGuard, api_key=options.api_key)  # added last: runs first
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    _add_generation_routes(app, worker, lora_folder, options.prompt_syntax)
    _add_progress_and_option_routes(app, worker)
    _add_listing_routes(app, worker, lora_folder)
    _add_controlnet_routes(app, worker)
    _add_information_routes(app, worker, options)
    return app


def _add_generation_routes(app: FastAPI, worker: Worker, lora_folder: Callable[[], Optional[str]], prompt_syntax: Optional[str]) -> None:
    """The page, and the routes that draw."""

    async def run_job(http: Request, request, job):
        outcome = await result_for(http, worker, worker.generate(job))
        return response(request, job, outcome.result, worker.model.title, outcome.interrupted, outcome.timestamp)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(favicon_ico(), media_type="image/x-icon", headers={"Cache-Control": "max-age=86400"})

    @app.get("/ldm/v1/model-defaults")
    async def model_defaults():
        """What a request that leaves them out gets from the loaded model: its own sampler, steps
        and cfg (scenes-lcm: LCM, 4, 1), else the generation defaults, and its native size."""
        used = worker.pipeline.request(Settings(), {})
        size = worker.pipeline.default_size
        return {
            "sd_model_checkpoint": worker.model.title,
            "sampler_name": OURS_TO_A1111[used.sampler],
            "steps": used.steps,
            "cfg_scale": used.cfg,
            "width": size,
            "height": size,
        }

    def job_of(request):
        models = {entry.title: entry.path for entry in worker.models}  # what refiner_checkpoint may name
        return job_from_request(request, worker.limits, worker.pipeline.controlnets, lora_folder(), prompt_syntax, models)

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(request: Txt2ImgRequest, http: Request):
        return await run_job(http, request, job_of(request))

    @app.post("/sdapi/v1/img2img")
    async def img2img(request: Img2ImgRequest, http: Request):
        return await run_job(http, request, job_of(request))


def _add_progress_and_option_routes(app: FastAPI, worker: Worker) -> None:
    @app.get("/sdapi/v1/progress")
    async def progress(skip_current_image: bool = False):
        snapshot = worker.progress.snapshot(worker.queued, with_image=not skip_current_image)
        preview = snapshot.pop("preview")
        snapshot["current_image"] = png_base64(preview) if preview is not None else None
        snapshot["textinfo"] = None
        return snapshot

    @app.post("/sdapi/v1/interrupt")
    async def interrupt():
        worker.interrupt()
        return {}

    @app.get("/sdapi/v1/options")
    async def get_options():
        return {"sd_model_checkpoint": worker.model.title, "samples_format": "png"}

    @app.post("/sdapi/v1/options")
    async def set_options(changes: dict):
        """Only sd_model_checkpoint has an effect (it switches the model, after the jobs
        queued before it); A1111's other options are accepted and ignored."""
        title = changes.get("sd_model_checkpoint")
        if title is not None:
            await asyncio.wrap_future(worker.switch_model(str(title)))


def _add_listing_routes(app: FastAPI, worker: Worker, lora_folder: Callable[[], Optional[str]]) -> None:
    """What requests can name: samplers, schedulers, models, LoRAs, embeddings."""

    @app.get("/sdapi/v1/samplers")
    async def samplers():
        return sampler_list()

    @app.get("/sdapi/v1/schedulers")
    async def schedulers():
        return scheduler_list()

    @app.get("/sdapi/v1/sd-models")
    async def sd_models():
        return [
            {"title": m.title, "model_name": m.title, "hash": None, "sha256": None, "filename": str(m.path), "config": None}
            for m in worker.models
        ]

    @app.get("/sdapi/v1/upscalers")
    async def upscalers():
        """A1111's pixel upscalers, for the hires fix's hr_upscaler (and its "Latent" modes below)."""
        return [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": None} for name in pixel_upscalers()]

    @app.get("/sdapi/v1/latent-upscale-modes")
    async def latent_upscale_modes():
        return [{"name": name} for name in HIRES_UPSCALERS if name not in pixel_upscalers()]

    @app.get("/sdapi/v1/loras")
    async def loras():
        """A1111's list of the LoRAs prompts can name: --lora-dir's files (else the model's own), with their metadata."""
        return lora_list(lora_folder())

    @app.get("/sdapi/v1/embeddings")
    async def embeddings():
        """A1111's list of the textual-inversion embeddings prompts can use by name (ldm-serve
        --embeddings-dir, else the loaded model's embeddings/), and of those skipped."""
        return embedding_list(worker.pipeline.embeddings_dir, worker.pipeline.components)


def pixel_upscalers() -> list[str]:
    """The hires upscalers that work on pixels: A1111 lists them apart from its latent modes;
    the built-in upscaler model once installed (any upscaler folder works too, by its path)."""
    models = [DEFAULT_UPSCALER] if is_installed(DEFAULT_UPSCALER) else []
    return [name for name in HIRES_UPSCALERS if not works_on_latents(name)] + models


def _add_controlnet_routes(app: FastAPI, worker: Worker) -> None:
    """The ControlNet extension's routes and the scripts list that names it."""

    @app.get("/controlnet/model_list")
    async def controlnet_models():
        """The ControlNet extension's route: the loaded model's ControlNets by name."""
        return {"model_list": model_list(worker.pipeline.controlnets)}

    @app.get("/controlnet/module_list")
    async def controlnet_modules():
        return {"module_list": MODULE_LIST}

    @app.get("/controlnet/version")
    async def controlnet_version():
        """The ControlNet extension's API version whose units alwayson_scripts.controlnet takes."""
        return {"version": CONTROLNET_API_VERSION}

    @app.get("/sdapi/v1/scripts")
    async def script_list():
        """The scripts alwayson_scripts can name: ControlNet, when the model has ControlNets."""
        return scripts(bool(worker.pipeline.controlnets.entries))


def _add_information_routes(app: FastAPI, worker: Worker, options: ServerOptions) -> None:
    """About the server: VAE list, memory, command-line flags, PNG parameters."""

    @app.get("/sdapi/v1/sd-vae")
    async def sd_vae():
        """No VAE files to choose from: each model folder carries its own VAE."""
        return []

    @app.get("/sdapi/v1/memory")
    async def memory_use():
        """The server's memory and, when the model is on a GPU, the GPU's (A1111's layout, bytes)."""
        return memory(worker.pipeline.components.device)

    @app.get("/sdapi/v1/cmd-flags")
    async def cmd_flags():
        """ldm-serve's command-line arguments (not A1111's: ours have other names); the API key is not shown."""
        return command_flags(options.command_flags)

    @app.post("/sdapi/v1/png-info")
    async def png_info(request: PngInfoRequest):
        image = decode_image(request.image, "image", worker.limits.max_pixels)
        text = image.info.get("parameters") or ""
        items = {k: v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
        parsed = parse_parameters(text) if text else {}
        if parsed:  # A1111's key names for the prompts
            parsed = {"Prompt": parsed.pop("prompt"), "Negative prompt": parsed.pop("negative_prompt"), **parsed}
        return {"info": text, "items": items, "parameters": parsed}


