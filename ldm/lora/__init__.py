"""LoRA: low-rank deltas (and learned token embeddings) that change a model without retraining it.

refs.py              how a request names its LoRAs (--lora, <lora:name:weight>, --lora-dir), no torch
apply.py             LoRA files in both key layouts (kohya, diffusers/peft): read, apply at a weight, unload exactly
module_names.py      which module each name in a LoRA file means (diffusers' names, SDXL's original block names)
mmdit_names.py       kohya's SD3 names (the original MMDiT's) as our modules: a fused qkv split in three, adaLN halves
families.py          a LoRA made for another family (SDXL on SD 1/2, or the reverse), told in one line
metadata.py          alpha from the adapter metadata diffusers writes into a file's header
token_embeddings.py  learned token embeddings bundled in a LoRA file
embedding_files.py   textual-inversion embedding files (A1111's .pt/.bin/.safetensors), read without unpickling code
embeddings.py        a folder of them (--embeddings-dir), the ones a request's prompts name, their export from a LoRA
merge.py             a model folder with LoRAs merged into its weights (ldm-convert --lora)
adapters.py          training: peft adapters on the denoiser and text encoder, and the LoRA files they become
denoiser_targets.py  training: what the adapters target in a U-Net or an MMDiT, and the file layouts each takes
parameterisation.py  a flow-matching LoRA on an eps/v model (or the reverse), told in one line
"""
