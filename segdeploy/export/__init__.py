"""PyTorch -> deployable artifacts. ``export_onnx`` (onnx.py) orchestrates; trace.py turns a deploy graph into ONNX;
passes/ holds one graph pass per module; manifest_builder.py writes the manifest; cache.py is the one export cache."""
