"""KFP lightweight components: one thin wrapper per step.

Each component imports its step function inside the body (KFP ships only the
function's source) and runs with `install_kfp_package=False`: the image already
holds fauna and kfp, so nothing is pip-installed at run time.
The image tags come from the one config; the pipeline sets the ones in use.
"""

from fauna.config import PipelineConfig

CPU_IMAGE = PipelineConfig().image_cpu
GPU_IMAGE = PipelineConfig().image_gpu
