"""An API's media type is worked out once per input or output class, not once per request.

What it changes: `_bentoml_sdk.io_models.IOMixin.mime_type`, the classmethod that BentoML calls to label every
answer (`IOMixin.to_http_response`), is wrapped in a cache keyed by the class. For a root model (a runner's
batchable API takes and returns lists) the stock method builds the class's whole JSON schema to read its `type`:
1.4 ms per call for `list[CritiqueOutcome]` or `list[GenerationOutcome]`, paid by every runner answer. The answer
depends only on the class, and the classes are the services' fixed input and output types.

No upstream issue. Checked range: `_bentoml_sdk/io_models.py` is the same in the 1.4.40 wheel as in 1.4.39.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from _bentoml_sdk.io_models import IOMixin

from compat import Patch

PATCH = Patch(
    name="bentoml_mime_type",
    library="bentoml",
    checked=">=1.4.39,<1.4.41",
    why="BentoML builds a root model's whole JSON schema on every answer to read its media type",
)

STOCK_MIME_TYPE = IOMixin.__dict__["mime_type"]  # the classmethod object, kept for tests/unit/test_compat.py
CLASSES_CACHED = 256  # the services' input and output types number a few dozen


@lru_cache(maxsize=CLASSES_CACHED)
def _mime_type(cls: type[Any]) -> str:
    return STOCK_MIME_TYPE.__func__(cls)


def install() -> None:
    IOMixin.mime_type = classmethod(_mime_type)  # type: ignore[method-assign,assignment]
