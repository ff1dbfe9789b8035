"""Running compressed models outside eager PyTorch: real INT8 on CPU through torchao PT2E (`pt2e`),
and the runtimes people ship with, one adapter each behind one interface (`base`: ONNX Runtime,
OpenVINO, ExecuTorch, LiteRT, Core ML, TensorRT in `runtime_*`), measured side by side (`bench`)
and watched for drift after deployment (`monitor`)."""
