"""Face–voice matching: which voice belongs to which face, learnt with symmetric InfoNCE."""
