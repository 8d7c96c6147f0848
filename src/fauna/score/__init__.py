"""How a trained model is scored and judged: the metric spec, evaluation, the champion policy."""
