"""A trained model applied: the predictor of one checkpoint or an ensemble, post-processing chosen on
out-of-fold predictions, and export to ONNX / TorchScript. Ends at class masks; measuring is a workflow's step."""
