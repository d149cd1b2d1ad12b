"""Procedural faces: identity, expression and viewing kept apart so tasks can drive each."""

from avlab.faces.render import (
    ACTIONS,
    EMOTIONS,
    Expression,
    FaceIdentity,
    Viewing,
    encode_jpeg,
    jpeg_roundtrip,
    render_clip,
    render_face,
)

__all__ = [
    "ACTIONS",
    "EMOTIONS",
    "Expression",
    "FaceIdentity",
    "Viewing",
    "encode_jpeg",
    "jpeg_roundtrip",
    "render_clip",
    "render_face",
]
