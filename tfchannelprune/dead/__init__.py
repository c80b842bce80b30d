"""Dead and non-learning channels (Evci et al.) and mean replacement.

Modules: ``gate_inputs`` (running statistics of gate inputs), ``non_learning`` (channels that
stop learning), ``mean_replacement`` (folding a removed channel's constant into consumers'
biases), ``detect`` (``find_dead_channels`` / ``remove_dead_channels``), ``monitor``
(``DeadChannelMonitor`` callback).
"""
