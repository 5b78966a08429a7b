"""digitpipe: handwritten-digit recognition, from raw MNIST to a registered ONNX champion."""

__version__ = "0.1.0"
