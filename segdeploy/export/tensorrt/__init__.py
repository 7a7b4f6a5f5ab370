"""TensorRT engines from segdeploy ONNX artifacts: lint, build plan, trtexec command lines, build bundle, builder."""
