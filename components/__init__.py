"""KFP lightweight components: one thin wrapper per step.

Each component imports its step function inside the body (KFP ships only the
function's source) and runs with `install_kfp_package=False`: the image already
holds fauna and kfp, so nothing is pip-installed at run time.

A component receives only its own config section (a dict, shown per task in the
KFP UI) plus the run's typed knobs that concern it (e.g. `image_size`); the
pipeline builder fills both in. The image tags here are placeholders: the
pipeline sets the images of the config it is built from.
"""

from fauna.config import PipelineConfig

CPU_IMAGE = PipelineConfig().image_cpu
GPU_IMAGE = PipelineConfig().image_gpu
