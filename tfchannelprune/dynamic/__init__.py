"""Dynamic channel execution during training (Spasov & Lio): a combinatorial UCB bandit picks
the channels each step runs, an executor runs the model on them with gathered kernels.

Modules: ``bandit``, ``executor``, ``frozen`` (inactive slices keep weights and optimizer state),
``callback`` (``DynamicChannelExecution``).
"""
