"""IRED-DCD research core: data, model, schedule, samplers, replay, losses, filters, trainer, stats."""

__version__ = "0.1.0"
