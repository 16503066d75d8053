"""Domain errors. Services raise these; the API layer maps each to one HTTP status."""


class StackError(Exception):
    status_code = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(StackError):
    status_code = 400


class NotFound(StackError):
    status_code = 404


class PayloadTooLarge(StackError):
    status_code = 413


class Unavailable(StackError):
    """A backend (Milvus, a remote model) cannot be reached right now."""

    status_code = 503
