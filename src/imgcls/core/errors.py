"""The one exception type the CLI turns into a short message and exit code 2."""


class ImgclsError(Exception):
    """A problem the user can fix (bad path, bad flag, missing weights...)."""


class BadImageError(ImgclsError):
    """An input file that cannot be decoded into an RGB image."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
