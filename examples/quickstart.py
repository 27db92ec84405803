"""Convert the bundled digits model and simulate it for 32 steps on 300 images.

    python examples/quickstart.py
"""

from __future__ import annotations

import bsnn


def main() -> None:
    model = bsnn.load_model("bundled:digits-fp")  # .meta: arch, data set, statistics, ...
    snn = bsnn.convert(model, "digits", percentile=99.7, norm=128, device="cpu")
    result = bsnn.simulate(snn, "digits", time=32, eval_size=300, device="cpu")
    print(f"ann_accuracy={result.ann_accuracy:.4f} images={result.images}")
    for t in (1, 2, 4, 8, 16, 32):  # delayed propagation: vgg6ab's readout hears step 8 on
        print(f"accuracy_t{t}={result.accuracy_per_step[t - 1]:.4f}")
    for layer in result.layers[:-1]:  # the output layer does not spike
        print(f"layer={layer.name} threshold={layer.threshold:.4f} "
              f"firing_rate={layer.firing_rate:.4f} "
              f"synops_per_image={layer.synops_per_image:.0f}")
    print(f"final_accuracy={result.final_accuracy:.4f}")


if __name__ == "__main__":
    main()
