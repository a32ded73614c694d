"""Pure renderers: a TransformerModel (+ operator settings) -> the child objects that serve it."""

from tmo.render.children import Rendered, render_children
from tmo.render.revision import compute_revision
from tmo.render.settings import RenderSettings

__all__ = ["RenderSettings", "Rendered", "compute_revision", "render_children"]
