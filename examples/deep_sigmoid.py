"""A model that does not train: 20 sigmoid layers of 32 units on the 8x8 digits.

``make_model(seed)`` builds it; nothing runs on import. Even with the matched (Glorot)
initialiser the gradient shrinks to about a quarter per layer towards the input (the
sigmoid's slope is at most 1/4): after 5 epochs with Adam it is still at chance (val
loss ln 10 = 2.303). Ask stablejax what to change::

    stablejax prescribe --model examples/deep_sigmoid.py:make_model --data digits \\
        --out prescription
"""

from flax import nnx

import stablejax as sj


def make_model(seed: int) -> nnx.Module:
    """The 20-layer sigmoid net (softmax output over the 10 digits), its layers stacked
    and run as one scan (``scan_layers=True``), initialised from ``seed``."""
    return sj.nn.mlp([32] * 20, input_shape=(8, 8), activation="sigmoid", scan_layers=True,
                     rngs=nnx.Rngs(seed))
