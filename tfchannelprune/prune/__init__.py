"""How much to prune and when: greedy cost-aware selection, schedules, the ``ChannelPruning``
callback for ``model.fit`` and the ``prune()`` loop of compaction rounds.

Modules: ``select``, ``schedules``, ``callback``, ``loop``.
"""
