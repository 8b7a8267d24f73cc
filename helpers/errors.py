"""The errors a stage of the pipeline raises: one module of their own, so that `python -m
helpers.pipeline` (which runs the pipeline as `__main__`) and the modules it imports (helpers.pretrain,
helpers.device) raise and catch the very same classes. Standard library only."""


class PipelineError(RuntimeError):
    """A stage could not run; the message says why."""


class Stopped(PipelineError):
    """A deadline stopped the work before it was done; what finished is kept (exit status 3)."""
