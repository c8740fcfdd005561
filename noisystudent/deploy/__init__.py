"""A trained model put to use: predictions from a run directory (``predict``), the model
exported as ONNX with its preprocessing (``export``), the exported file in ONNX Runtime
without torch (``onnx_runtime``, ``python -m noisystudent.deploy``), and what a model costs
to run (``cost``). Importing this package imports nothing heavy: the ONNX runner works
where torch is not installed."""
