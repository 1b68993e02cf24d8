"""The teacher's ControlNet steering a guidance-distilled (LCM) student U-Net: the U-Net still
gets its guidance embedding, one conditional call per step, and the control changes the result."""

from tiny import build_tiny
from tiny_controlnets import steering_controlnet

from ldm.control.library import ControlNets
from ldm.control.units import ControlUnit
from ldm.pipeline import Pipeline


def test_controlnet_on_an_lcm_unet(edges):
    components = build_tiny(unet__time_cond_proj_dim=32)
    teacher = build_tiny()  # the same U-Net shape, without a guidance embedding
    pipe = Pipeline(components, ControlNets.of(edges=("canny", steering_controlnet(teacher, 1))))
    calls = []
    hook = components.denoiser.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True)
    options = dict(sampler="lcm", steps=2, cfg=6.0, seed=3, progress=False)
    try:
        controlled = pipe.generate("a lake", controls=(ControlUnit(edges, "raw"),), **options)
    finally:
        hook.remove()
    assert len(calls) == 2 and all(call["timestep_cond"].shape == (1, 32) for call in calls)
    assert all(call["down_block_additional_residuals"] is not None for call in calls)
    plain = pipe.generate("a lake", **options)
    assert controlled.images[0].tobytes() != plain.images[0].tobytes()
