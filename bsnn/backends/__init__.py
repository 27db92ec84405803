"""Other simulators for the converted network, for cross-checks against the engine.

Each backend has the engine's interface, `Backend(net, options).run_batch(x, labels, batch_index)
-> BatchCounts`, and imports its simulator only when it is built, so `bsnn` never needs them.
"""
