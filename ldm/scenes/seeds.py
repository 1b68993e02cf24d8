"""Dataset seeds reserved for evaluation, in one place so they stay apart.

Each is a `seed` for `ldm.scenes.generator.scene_seed(seed, index)`, which hashes the pair, so
two different dataset seeds give unrelated scene streams. Models are trained on small
dataset seeds (tools/make_scenes.py defaults to 0); these sit far above any of those.
"""

CLASSIFIER_TRAIN = 10_000_000  # scenes the attribute classifier learns from
CLASSIFIER_VALIDATION = 10_000_001  # fresh scenes for its own accuracy report
CLASSIFIER_TEST = 10_000_002  # fresh scenes for the tests of the shipped classifier
VAE_RECONSTRUCTION = 20_000_000  # unseen scenes for the VAE's PSNR/SSIM
REAL_REFERENCE = 30_000_000  # real scenes drawn for each prompt, as a reference for the model
SEGMENTER_TRAIN = 40_000_000  # scenes the layout segmenter learns from
SEGMENTER_VALIDATION = 40_000_001  # fresh scenes for its own score
SEGMENTER_TEST = 40_000_002  # fresh scenes for the tests of the shipped segmenter
CONTROL_REFERENCE = 50_000_000  # held-out layouts and edges the ControlNets are evaluated on
UPSCALER_EVALUATION = 60_000_000  # held-out 512 px scenes the upscalers are scored on (tools/evaluate_upscaler.py)
