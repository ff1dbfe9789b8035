"""The presentation layer: every figure, render function and widget panel, one module per technique
on shared helpers (`display` for figures, `panel` for widgets). Re-exported flat, so a notebook writes
`views.sensitivity(...)` or `views.pruning_panel(...)`."""

from compresslab.views.deepcompression import *  # noqa: F403
from compresslab.views.deployment import *  # noqa: F403
from compresslab.views.display import *  # noqa: F403
from compresslab.views.distillation import *  # noqa: F403
from compresslab.views.language import *  # noqa: F403
from compresslab.views.lottery import *  # noqa: F403
from compresslab.views.lowrank import *  # noqa: F403
from compresslab.views.narrative import *  # noqa: F403
from compresslab.views.panel import *  # noqa: F403
from compresslab.views.pareto import *  # noqa: F403
from compresslab.views.pruning import *  # noqa: F403
from compresslab.views.quantization import *  # noqa: F403
