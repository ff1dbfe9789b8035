"""Running compressed models outside eager PyTorch: real INT8 on CPU through torchao PT2E (`pt2e`)."""

from compresslab.deploy.pt2e import *  # noqa: F403
from compresslab.deploy.report import *  # noqa: F403
