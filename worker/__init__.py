"""Runs distillation jobs: the Celery task and the embedded runner call the same job function."""
