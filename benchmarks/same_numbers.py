"""Records the numbers of fixed training runs, to show that a refactor changes none of them.

Runs, on the bundled digits (600 training, 200 validation samples): a batch-norm ELU
MLP trained with momentum + ``clipnorm`` + ``reduce_on_plateau`` under
``ReduceLROnPlateau`` and ``EarlyStopping``, with ``class_weight`` and
``validation_split``; a Nadam run checkpointed after 2 epochs and resumed to 3; an RReLU
MLP with ``sample_weight``, the progress bar and ``GradientMonitor``; ``evaluate`` and
``predict``; a 2-member ``sweep.run``; and, with ``--mesh``, Adam + ``clipnorm`` on 8
simulated CPU devices. Every history and final variable is saved in one ``.npz``;
``--compare A B`` says which arrays differ (bitwise, NaN equal to NaN)::

    python benchmarks/same_numbers.py before.npz            # on the old commit
    python benchmarks/same_numbers.py before_mesh.npz --mesh
    python benchmarks/same_numbers.py after.npz             # on the new one
    python benchmarks/same_numbers.py --compare before.npz after.npz

Both runs must be on the same machine: float32 training differs between CPUs.
"""

import argparse
import os
import sys
import tempfile

import numpy as np


def _compare(a: str, b: str) -> int:
    first, second = np.load(a), np.load(b)
    missing = sorted(set(first.files) ^ set(second.files))
    differ = [k for k in sorted(set(first.files) & set(second.files))
              if not np.array_equal(first[k], second[k], equal_nan=True)]
    print(f"{len(first.files)} arrays; missing on one side: {missing}; differ: {differ}")
    return 1 if missing or differ else 0


def _record(out: str, mesh: bool) -> None:
    import jax
    from flax import nnx

    import stablejax as sj

    record: dict[str, np.ndarray] = {}

    def put(prefix, tree):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            record[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)

    def history(prefix, h):
        for k, v in h.history.items():
            record[f"{prefix}/history/{k}"] = np.asarray(v, np.float64)

    digits = sj.data.digits(seed=0)
    train = (digits.train.x[:600], digits.train.y[:600])
    valid = (digits.valid.x[:200], digits.valid.y[:200])

    def model(seed=0):
        return sj.nn.mlp([32, 32], input_shape=(8, 8), activation="elu",
                         batch_norm="after", rngs=nnx.Rngs(seed))

    if mesh:
        m = model()
        h = sj.fit(m, sj.adam(1e-3, clipnorm=1.0), train, epochs=2, batch_size=64,
                   validation_data=valid, verbose=0, mesh=sj.distributed.data_mesh())
        history("mesh", h)
        put("mesh/params", nnx.state(m))
        np.savez(out, **record)
        return
    m = model()
    tx = sj.sgd(0.05, momentum=0.9, clipnorm=1.0,
                plateau=sj.reduce_on_plateau(factor=0.5, patience=1))
    callbacks = [sj.train.ReduceLROnPlateau(factor=0.5, patience=1),
                 sj.train.EarlyStopping(patience=3)]
    h = sj.fit(m, tx, train, epochs=4, batch_size=32, validation_split=0.2,
               callbacks=callbacks, verbose=0, class_weight={1: 2.0})
    history("fit1", h)
    put("fit1/params", nnx.state(m))
    directory = tempfile.mkdtemp()
    for epochs in (2, 3):
        m = model(1)
        h = sj.fit(m, sj.nadam(1e-3), train, epochs=epochs, batch_size=50,
                   validation_data=valid, checkpoint_dir=f"{directory}/run", verbose=0)
    history("resume", h)
    put("resume/params", nnx.state(m))
    m = sj.nn.mlp([16], input_shape=(8, 8), activation="rrelu", rngs=nnx.Rngs(2))
    h = sj.fit(m, sj.rmsprop(1e-3), train, epochs=2, batch_size=40,
               sample_weight=np.linspace(0, 2, 600), verbose=1,
               callbacks=[sj.diagnostics.GradientMonitor()])
    history("weighted", h)
    put("weighted/params", nnx.state(m))
    for k, v in sj.train.evaluate(m, *valid, batch_size=64).items():
        record[f"evaluate/{k}"] = np.float64(v)
    record["predict"] = sj.train.predict(m, valid[0], batch_size=30)
    runs = sj.sweep.run(lambda seed: sj.nn.mlp([16], input_shape=(8, 8), rngs=nnx.Rngs(seed)),
                        sj.adam(1e-3), train, seeds=[0, 1], epochs=2, batch_size=32,
                        validation_data=valid)
    for i, run in enumerate(runs):
        for k, v in run.history.items():
            record[f"sweep{i}/{k}"] = np.asarray(v, np.float64)
    np.savez(out, **record)
    print(f"{len(record)} arrays written to {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="the .npz to write")
    parser.add_argument("--mesh", action="store_true", help="the 8-device run only")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two records")
    args = parser.parse_args()
    if args.compare:
        return _compare(*args.compare)
    if not args.out:
        parser.error("give the .npz to write, or --compare A B")
    if args.mesh:  # before JAX is imported
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    _record(args.out, args.mesh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
