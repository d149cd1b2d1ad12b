"""Video anomaly detection with anomalib's AI-VAD: extractors chosen by config, mergeable density."""
