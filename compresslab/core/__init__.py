"""The bottom layer: data, models, the one training loop and the baseline cache, the size ledger
(`metrics`) and the latency harness (`latency`), the report base and result recording, the
notebooks' run profiles (`profiles`), atomic writes (`io`) and config validation (`validate`).
Nothing here imports a technique."""
