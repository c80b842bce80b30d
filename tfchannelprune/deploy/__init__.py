"""TFLite / LiteRT export with a parity check, and measured latency.

Modules: ``export`` (``export_tflite``), ``latency`` (``benchmark_tflite``, width tables).
"""
