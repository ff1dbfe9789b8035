"""The presentation layer: every figure, render function and widget panel, one module per technique
on shared helpers (`figures` for figures and the `View` of a render, `panel` for widgets,
`narrative` for prose built from a run's numbers). Each name is imported from the module that
defines it: `from compresslab.views import figures, panel` and, beside a technique module of the
same name, `from compresslab.views import pruning as pruning_views`."""
