"""TFLite / LiteRT export with a parity check, and measured latency.

Modules: ``export`` (``export_tflite``), ``latency`` (``benchmark_tflite``, width tables),
``latency_model`` (``LatencyModel``: a measured per-group latency table of a model) and
``latency_measure`` (its micro-benchmarks and on-disk cache).
"""
