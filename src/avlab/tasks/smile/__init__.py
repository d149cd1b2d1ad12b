"""Smile intensity and facial emotion from face images and short clips."""
