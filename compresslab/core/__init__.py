"""The bottom layer: data, models, the one training loop and the baseline cache, the size ledger and
latency harness, the report base and result recording. Nothing here imports a technique."""
