"""Data parallelism (beyond the notes): the BN model of section 1.3 on several devices.

Without accelerators, 4 CPU devices are simulated; the flag must be set before JAX starts.
The batch of 64 is global: each device trains on 16 rows of it, and batch norm's statistics
are the whole batch's, so the run matches one device to float32 rounding.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import stablejax as sj  # noqa: E402

epochs = int(os.environ.get("STABLEJAX_EXAMPLE_EPOCHS", 10))
data = sj.data.digits()


def run(mesh=None, shard_optimizer_state=False):
    model = sj.nn.mlp([300, 100], input_shape=(8, 8), activation="elu", batch_norm="after",
                      rngs=nnx.Rngs(0))
    # keras.distribution.set_distribution(keras.distribution.DataParallel()); model.fit(...)
    return sj.fit(model, sj.nadam(1e-3), data.train, epochs=epochs, batch_size=64,
                  validation_data=data.valid, verbose=0, mesh=mesh,
                  shard_optimizer_state=shard_optimizer_state)


mesh = sj.distributed.data_mesh()  # every device, one axis "data"
print(f"{jax.device_count()} devices: {mesh}")
one, many = run(), run(mesh)
sharded = run(mesh, shard_optimizer_state=True)
for name, history in [("1 device", one), (f"{mesh.size} devices", many),
                      (f"{mesh.size} devices, sharded Adam state", sharded)]:
    print(f"{name}: val_accuracy {history.history['val_accuracy'][-1]:.3f}")
gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
          for a, b in zip(jax.tree.leaves(many.state.params),
                          jax.tree.leaves(one.state.params), strict=True))
print(f"largest parameter difference from 1 device: {gap:.2e}")
print("Adam state per device:", sj.distributed.per_device_bytes(many.state.opt_state), "B,",
      "sharded:", sj.distributed.per_device_bytes(sharded.state.opt_state), "B")
