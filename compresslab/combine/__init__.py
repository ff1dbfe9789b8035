"""Combinations of techniques (the Pareto capstone, notebook 08): recipes chain the technique verbs
(`recipes`), and each result becomes a measured point with its real artifact, runtime latency and
energy estimate (`points`). This layer sits above `deploy` (it exports to the runtimes) and below
`views` and `running`."""
