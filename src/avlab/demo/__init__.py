"""A browser demo over trained checkpoints: `python -m avlab.demo smile=CKPT vad=CKPT ...`."""
