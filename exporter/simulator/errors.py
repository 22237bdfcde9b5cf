"""The API's error answers, as the simulator raises them."""

from __future__ import annotations


class ApiError(Exception):
    """An error answer of the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
