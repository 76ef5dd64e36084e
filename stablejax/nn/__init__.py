"""Flax NNX layers: Keras-semantics batch norm, PReLU, RReLU, activation-aware Dense, mlp.

Deep stacks of identical layers compile once with ``mlp(..., scan_layers=True)``: the
repeated layers become a :class:`Stack`, their variables stacked and run by a scan.

The Fashion-MNIST model of docs/guide.md §1.3 with batch normalisation after each hidden layer::

    from flax import nnx
    import stablejax as sj

    model = sj.nn.mlp([300, 100], activation="elu", batch_norm="after", rngs=nnx.Rngs(0))
    y = model(x)            # training mode: batch statistics, moving averages updated
    model.eval()            # inference mode: moving statistics
    sj.nn.variables(model.layers[1])
    # [('bias', True), ('mean', False), ('scale', True), ('var', False)]

One module per kind of layer; every public name is re-exported here:

- :mod:`stablejax.nn.dense`: ``Dense``, ``Flatten``;
- :mod:`stablejax.nn.activation`: ``Activation``, ``PReLU``, ``RReLU``;
- :mod:`stablejax.nn.norm`: ``BatchNorm`` (and its ``FrozenCalls`` counter);
- :mod:`stablejax.nn.stack`: ``Stack``, ``unroll``, ``copy_layers``;
- :mod:`stablejax.nn.builders`: ``mlp``;
- :mod:`stablejax.nn.paths`: ``path_name``, ``variables``.
"""

from stablejax.nn._common import ActivationLike as ActivationLike
from stablejax.nn.activation import Activation, PReLU, RReLU
from stablejax.nn.builders import BATCH_NORM_PLACEMENTS as BATCH_NORM_PLACEMENTS
from stablejax.nn.builders import mlp
from stablejax.nn.dense import Dense, Flatten
from stablejax.nn.norm import BatchNorm, FrozenCalls
from stablejax.nn.paths import path_name, variables
from stablejax.nn.stack import Stack, copy_layers, unroll

__all__ = [
    "BatchNorm",
    "FrozenCalls",
    "Dense",
    "Activation",
    "PReLU",
    "RReLU",
    "Flatten",
    "Stack",
    "mlp",
    "unroll",
    "copy_layers",
    "path_name",
    "variables",
]
