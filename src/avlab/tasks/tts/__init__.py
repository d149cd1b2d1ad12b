"""Text-to-speech: a small autoregressive text-to-mel model trained on LJSpeech-layout data."""
