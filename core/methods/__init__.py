"""Distillation methods, one module each. A module registers its method when imported
(core/method_registry.py imports every module of this package); nothing here lists them."""
