"""An SDXL model loaded in fp16 decodes through its VAE in fp32 where the VAE's config says
force_upcast (diffusers' SDXL pipelines' upcast_vae): the pixels of diffusers' fp32 decode, and
the VAE back in fp16 afterwards; without force_upcast it decodes in fp16."""

import torch
from sdxl_folder import write_tiny_sdxl_folder

from ldm.pipeline import Pipeline


def test_an_fp16_sdxl_vae_decodes_in_fp32_as_force_upcast_says(tmp_path):
    from diffusers import AutoencoderKL

    folder = write_tiny_sdxl_folder(tmp_path)
    pipe = Pipeline.load(folder, dtype=torch.float16)
    vae = pipe.components.vae
    assert vae.dtype == torch.float16 and vae.config.force_upcast and pipe.upcasts_vae
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).to(torch.float16)  # (1, 4, h, w) scaled
    ours = pipe.decode(latents)
    assert ours.dtype == torch.float16 and vae.dtype == torch.float16  # the VAE is fp16 again
    # diffusers' upcast_vae: the fp16 weights cast to fp32, the latents too.
    theirs_vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True, use_safetensors=True).half().float().eval()
    with torch.no_grad():
        theirs = theirs_vae.decode(latents.float() / theirs_vae.config.scaling_factor).sample
    assert (ours.float() - theirs).abs().max().item() < 7e-4  # fp32 decode rounded to fp16 once: 4.4e-4 (an fp16 decode: 1.2e-3)

    vae.register_to_config(force_upcast=False)
    assert not pipe.upcasts_vae
