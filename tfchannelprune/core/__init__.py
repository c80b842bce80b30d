"""What is coupled and how a layer is cut: the channel graph, per-layer rules, gates, plans,
surgery and cost.

Modules, lowest first (each imports only those before it):

* ``gate``: the ``ChannelGate`` layer;
* ``rules``: one rule object per layer type (propagate, cut, MACs, and the declarations the
  features read: weight axes, bias folding, subset execution);
* ``graph``: ``ChannelGraph`` / ``ChannelGroup``, groups of coupled channels;
* ``plans``: {group: kept channels}, checked, read from and written to gates;
* ``wrap``: ``wrap()`` / ``strip()``;
* ``surgery``: ``compact()``;
* ``cost``: MACs and parameters;
* ``summary``: the per-group table.
"""
