"""Model formats: where weights live on disk and how each layout becomes our components.

model_folder.py            our model folders (model.yaml + safetensors): save atomically, load, diffusers SD folders
single_file.py             one-file checkpoints in the original Stable Diffusion layout: read and write
single_file_prediction.py  eps or v-prediction for a single file whose weights do not say
original_layout.py         diffusers module names <-> the original (CompVis) checkpoint key names
layouts/                   the facts of the Stable Diffusion layouts (stable_diffusion.yaml)
diffusers_conversion.py    any loadable model -> a diffusers-format Stable Diffusion folder
diffusers_export.py        a fine-tuned diffusers folder: its source with the U-Net replaced
"""
