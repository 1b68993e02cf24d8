"""Generation on loaded components: the Python API for txt2img, img2img and inpainting.

    from PIL import Image
    from ldm.pipeline import Pipeline
    pipe = Pipeline.load("runs/scenes/model")              # or an SD folder in diffusers format
    result = pipe.generate("a lake at dawn", cfg=7.5, steps=20, seed=7, n=2)
    result.images[0].save("lake.png")
    photo = Image.open("photo.png")
    pipe.img2img("a lake at dusk", photo, strength=0.6, seed=7).images[0].save("dusk.png")
    pipe.inpaint("a boat", photo, Image.open("mask.png"), seed=7).images[0].save("boat.png")
    Pipeline.load("x4-upscaler").upscale("a lake", photo, noise_level=20, seed=7).images[0].save("big.png")

All four are tasks (txt2img.py, img2img.py, inpaint.py, upscale.py) over one sampling run
(`Pipeline.sample`, one denoising loop: ldm.diffusion.sampling.denoise); they differ in the
starting latents, the first timestep (strength), the inpainting constraint and the image-side
conditions (an upscaler's noised picture and noise level). An SDXL refiner (refiner.py) takes
over the last part of a run's schedule (txt2img, img2img, inpaint, the hires fix's second pass):
`pipe.generate(..., refiner=DIR, refiner_switch=0.8)`.
"""

from ldm.pipeline.core import Pipeline
from ldm.pipeline.request import SampleRequest, make_generators
from ldm.pipeline.result import GenerationResult

__all__ = ["GenerationResult", "Pipeline", "SampleRequest", "make_generators"]
