"""One module per technique: pure tensor primitives first, then one model-level verb
`apply_<technique>(model, config, data=None, *, inplace=False, ...) -> (model, Report)`.
No technique imports the views layer (matplotlib, ipywidgets)."""
