"""The science of data-free distillation: models, generators, losses and methods.

Knows no HTTP, no database and no Celery; runs from the CLI on a laptop as well as in a worker.
"""
