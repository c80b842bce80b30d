"""The one package that touches Keras internals (graph nodes, private attributes).

* ``graph``: ``flatten_graph(model)``, a flat, topologically ordered list of leaf calls (layers
  and ``keras.ops`` operations) with nested models inlined, and tensors named by canonical ids;
* ``rebuild``: ``rebuild(model, ...)`` replays the graph on new inputs to build a new model
  with the same nesting, letting the caller replace layers and insert layers after any output;
* ``nodes``: a call's arguments (``node_kwargs``, ``node_constant_args``), replaying one call
  (``call_node``), weights by name, ``keras.ops`` operation classes;
* ``training``: the one installer of training-step hooks (``add_train_step_hook``, stacked,
  each removed on its own), the CallbackList a callback runs in, and Keras's loss tracker.
"""

from tfchannelprune._keras.graph import (
    FlatGraph,
    FlatNode,
    check_backend,
    flatten_graph,
    functional_view,
    is_model,
    nodes_in_order,
)
from tfchannelprune._keras.nodes import (
    call_node,
    input_values,
    node_args,
    node_constant_args,
    node_kwargs,
    operation_class,
    set_weights_by_name,
    weight_shapes_only,
    weights_by_name,
    weights_replaced,
)
from tfchannelprune._keras.rebuild import (
    AfterFn,
    BuiltFn,
    LayerFn,
    clone_layer,
    clone_operation,
    rebuild,
)
from tfchannelprune._keras.training import (
    HookHandle,
    add_train_step_hook,
    fit_callback_list,
    has_train_step_hook,
    loss_tracker,
    remove_train_step_hook,
)

__all__ = [
    "AfterFn", "BuiltFn", "FlatGraph", "FlatNode", "HookHandle", "LayerFn",
    "add_train_step_hook", "call_node", "check_backend", "clone_layer", "clone_operation",
    "fit_callback_list", "flatten_graph", "functional_view", "has_train_step_hook",
    "input_values", "is_model", "loss_tracker", "node_args", "node_constant_args",
    "node_kwargs", "nodes_in_order", "operation_class", "rebuild", "remove_train_step_hook",
    "set_weights_by_name", "weight_shapes_only", "weights_by_name", "weights_replaced",
]  # fmt: skip
