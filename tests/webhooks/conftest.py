from __future__ import annotations

from collections.abc import Iterator

import pytest

from webhook_support import kill_started


@pytest.fixture(autouse=True)
def no_deliverer_left() -> Iterator[None]:
    yield
    kill_started()
