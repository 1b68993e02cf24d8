"""ControlNet: steering generation with a control image (edges, a layout map) as well as words.

units.py          what a request asks for (image, type, scale, start/end window), checked cheaply
preprocessors.py  control types by name: a picture -> the control image a ControlNet reads
model.py          ControlNetModel from a U-Net, ControlNet folders (save atomically, load offline; either class)
library.py        the ControlNets a pipeline can use, and which one serves a unit
fit.py            whether a ControlNet can steer a model (told from the two configs)
denoiser.py       the ControlNets' residuals, steering the U-Net's or MMDiT's backbone adapter (wrapped by guidance)
sd3.py            SD3 ControlNets (SD3ControlNetModel): their block samples and control latents
sd3_fit.py        whether an SD3 ControlNet can steer an MMDiT
sd3_model.py      an SD3 ControlNet made from an MMDiT, to be trained
"""
