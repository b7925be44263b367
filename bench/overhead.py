"""The training loop's overhead: ``Trainer`` with a growth policy attached but not firing,
against a plain hand-written PyTorch loop on the same network, data, batches and optimizer.

Both run in this process, interleaved in short blocks (A B C, B C A, C A B, ...) so drift in
machine speed hits both alike; the summary is the median over blocks of (trainer time / plain
time). A second plain loop on its own network is timed in the same rotation: its ratio to the
first (``aa_ratio``) is the noise floor of the measurement, printed beside the claim. Trainer's
blocks run ``train_until`` (the loop alone): ``fit``'s final evaluation has no plain counterpart.
The policy is a plateau-triggered layer insertion whose threshold can never be met, so it reads
the loss history every window exactly as a live policy does.
"""

from __future__ import annotations

import statistics
import time

import _common
import torch
import torch.nn.functional as F

from growth_core import data as datasets
from growth_core.growth import DepthGrowth, DepthWidthPolicy, OnPlateau
from growth_core.init import Initializer
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec
from growth_core.train import TrainConfig, Trainer

NAME = "overhead"
SPEC = ArchitectureSpec(64, 10, (256, 256), "relu")
BATCH = 64
LR = 1e-3


def plain_loop(net, data, steps, gen):
    """What a user would write by hand: shuffle per epoch, forward, loss, backward, step."""
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    x, y = data.x_train, data.y_train
    order, cursor = torch.randperm(len(x), generator=gen), 0
    for _ in range(steps):
        if cursor + BATCH > len(x):
            order, cursor = torch.randperm(len(x), generator=gen), 0
        idx = order[cursor : cursor + BATCH]
        cursor += BATCH
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        opt.step()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    args = _common.parser(NAME, __doc__).parse_args()
    _common.setup()
    blocks = 30 if args.quick else 200
    steps = 50 if args.quick else 100
    data = datasets.digits()
    never = OnPlateau(window=50, threshold=-1e9)  # a loss can never rise that much

    plain_net = Initializer("kaiming").apply(build(SPEC), seed=0)
    control_net = Initializer("kaiming").apply(build(SPEC), seed=0)
    gen = torch.Generator().manual_seed(0)
    control_gen = torch.Generator().manual_seed(0)
    trainer_net = Initializer("kaiming").apply(build(SPEC), seed=0)
    total = (blocks + 1) * steps
    config = TrainConfig(steps=total, lr=LR, optimizer="adam", batch_size=BATCH)
    trainer = Trainer(
        trainer_net, data, config, policy=DepthWidthPolicy(never, depth=DepthGrowth())
    )

    def run_trainer():  # the loop alone: fit's final evaluation has no plain counterpart
        trainer.train_until(trainer.step + steps)

    def run_plain():
        plain_loop(plain_net, data, steps, gen)

    def run_control():
        plain_loop(control_net, data, steps, control_gen)

    loops = {
        "plain PyTorch": run_plain,
        "Trainer + policy": run_trainer,
        "plain (A/A)": run_control,
    }
    for fn in loops.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for block in range(blocks):  # rotate the order, so no loop always runs first
        for name in names[block % 3 :] + names[: block % 3]:
            times[name].append(timed(loops[name]) / steps)
    assert not trainer.events, "the policy was meant never to fire"
    plain = times["plain PyTorch"]
    rows = [
        {
            "loop": name,
            "median_step_us": statistics.median(t) * 1e6,
            "ratio_to_plain": statistics.median(b / a for a, b in zip(plain, t, strict=True)),
        }
        for name, t in times.items()
    ]
    summary = {"step_time_ratio": rows[1]["ratio_to_plain"], "aa_ratio": rows[2]["ratio_to_plain"]}
    print(_common.markdown_table(rows, ["loop", "median_step_us", "ratio_to_plain"]))
    print(
        f"\nstep_time_ratio: {summary['step_time_ratio']:.3f} (target <= 1.05); "
        f"A/A control {summary['aa_ratio']:.3f}"
    )
    config = {"spec": SPEC.to_dict(), "batch": BATCH, "blocks": blocks, "steps": steps}
    out = _common.write_result(NAME, args.out, config, rows, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
