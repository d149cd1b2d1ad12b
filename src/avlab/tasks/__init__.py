"""One package per task: data.py -> model.py -> module.py, and synth.py for generated data."""
