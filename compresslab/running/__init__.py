"""The top layer: executing notebooks with papermill (`runner`) and the `compresslab` command (`cli`)."""
