"""``lightning-split serve``: an OpenAI-compatible chat-completions server for trying and evaluating controls.

One backbone is served with one or more saved controls; each request chooses the control and its multiplier
(``control``, ``multiplier`` in the body) and concurrent requests are decoded in batches, one multiplier per row.
:func:`load_served` loads the backbone and controls, :func:`create_app` builds the ASGI application (run it with
uvicorn). This package imports FastAPI and is imported only by the ``serve`` command.
"""

from .app import ServeSettings, create_app
from .served import ServedModel, load_served, named_controls

__all__ = ["ServeSettings", "ServedModel", "create_app", "load_served", "named_controls"]
