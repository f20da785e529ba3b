"""imgcls: train, evaluate, compare and serve image classifiers, from Python or the shell.

    import imgcls
    run = imgcls.train(data="food5", model="efficientnet_lite0", epochs=5, val_split=0.2, out="runs/x")
    run.evaluate()
    imgcls.load("runs/x").predict(["a.jpg"], topk=3)

The names below are loaded on first use, so ``import imgcls`` (and the CLI's ``--help``) stays instant.
"""

from imgcls.core.errors import ImgclsError

__version__ = "0.1.0"
_API = (
    "AutoResult",
    "Comparison",
    "DataCheck",
    "Evaluation",
    "Model",
    "Predictions",
    "Run",
    "check_data",
    "compare",
    "demo_data",
    "evaluate",
    "explain",
    "export",
    "load",
    "loadtest",
    "lr_find",
    "auto",
    "available_models",
    "open_run",
    "predict",
    "rebuild_report",
    "serve",
    "train",
)
__all__ = ["ImgclsError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import imgcls.api

        return getattr(imgcls.api, name)
    raise AttributeError(f"module 'imgcls' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
