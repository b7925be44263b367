import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from growth_core import train
from growth_core.data import Dataset
from growth_core.flops import train_step_flops
from growth_core.growth import AtSteps, Budget, DepthGrowth, DepthWidthPolicy, OnPlateau
from growth_core.init import Initializer
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec
from growth_core.train import TrainConfig, TrainConfigError, Trainer, carry_optimizer_state

SPEC = ArchitectureSpec(4, 3, (8,), "relu")


def toy_data(n=96, seed=0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, 4, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return Dataset("toy", x[:n], y[:n], x[n:], y[n:], num_classes=3)


def make_net(spec=SPEC, seed=0):
    return Initializer("kaiming").apply(build(spec), seed=seed)


def test_full_batch_sgd_lowers_the_loss_and_logs_every_step():
    result = Trainer(make_net(), toy_data(), TrainConfig(steps=60, lr=0.5)).fit()
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert len(losses) == 60
    assert losses[-1] < 0.7 * losses[0]
    last = result.final
    assert {"test_loss", "test_accuracy", "flops", "params", "depth", "widths"} <= set(last)
    assert last["depth"] == 1 and last["widths"] == [8]


def test_a_second_held_out_split_is_evaluated_under_its_own_name():
    data, other = toy_data(), toy_data(seed=1)
    trainer = Trainer(make_net(), data, TrainConfig(steps=5, lr=0.1), eval_name="val")
    trainer.fit()
    val = trainer.history[-1]["val_accuracy"]
    metrics = trainer.evaluate("test", on=(other.x_test, other.y_test))
    row = trainer.history[-1]
    assert row["val_accuracy"] == val and row["test_accuracy"] == metrics["test_accuracy"]
    with torch.no_grad():
        logits = trainer.net(other.x_test)
    expected = (logits.argmax(1) == other.y_test).float().mean().item()
    assert metrics["test_accuracy"] == expected
    assert metrics["test_loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, other.y_test).item()
    )


def test_batched_logging_records_what_step_by_step_logging_does(monkeypatch):
    def history(pending_elements, watch=False):
        monkeypatch.setattr(train, "PENDING_ELEMENTS", pending_elements)
        config = TrainConfig(steps=40, lr=0.1, batch_size=16, eval_every=10)
        trainer, seen = Trainer(make_net(), toy_data(), config), []
        if watch:  # reading the history mid-training sees the step just taken
            trainer.add_callback("on_step_end", lambda t: seen.append(t.history[-1]["loss"]))
        return trainer.fit().history, seen

    eager, _ = history(1)  # every step reduced on its own
    batched, _ = history(10**9)  # reduced when read: at evaluations and at the end
    watched, seen = history(10**9, watch=True)
    assert batched == eager == watched
    rows = [row for row in eager if "loss" in row]
    assert seen == [row["loss"] for row in rows]
    assert len(rows) == 40 and all(0.0 <= row["accuracy"] <= 1.0 for row in rows)


def test_flops_counted_per_step_match_torch_flop_counter():
    data = toy_data()
    trainer = Trainer(make_net(), data, TrainConfig(steps=5, lr=0.1, batch_size=32))
    with FlopCounterMode(display=False) as counter:
        for _ in range(5):
            trainer.train_step(*trainer.next_batch())
    assert trainer.flops == counter.get_total_flops() == 5 * train_step_flops(SPEC, 32)


def test_mini_batches_visit_every_sample_once_per_epoch():
    data = toy_data(n=96)
    trainer = Trainer(make_net(), data, TrainConfig(steps=1, batch_size=32))
    seen = torch.cat([trainer.next_batch()[0] for _ in range(3)])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, data.x_train.tolist()))


def insertion(trigger, **depth):
    """SensLI alone: the depth-only growth policy."""
    budget = Budget(max_params=depth.pop("max_params", None))
    return DepthWidthPolicy(trigger, depth=DepthGrowth(**depth), budget=budget)


def test_epochs_train_whole_passes_and_every_rank_the_same_steps():
    data = toy_data(n=96)  # 3 batches of 32
    result = Trainer(make_net(), data, TrainConfig(epochs=2, batch_size=32)).fit()
    assert result.history[-1]["step"] == 6
    data = toy_data(n=10)  # 3 shards of 4, 3, 3 samples
    config = TrainConfig(epochs=1, batch_size=3)
    steps = [Trainer(make_net(), data, config, shard=(r, 3)).total_steps for r in range(3)]
    assert steps == [2, 2, 2]  # ceil(4 / 3): the largest shard sets the pace
    assert Trainer(make_net(), data, TrainConfig(epochs=4)).total_steps == 4  # full batch


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": math.inf}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 2}, "steps"),
        ({"steps": None}, "steps"),
        ({"steps": None, "epochs": -1}, "epochs"),
        ({"steps": -1}, "steps"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(TrainConfigError, match=f"^{field}:"):
        TrainConfig(**{"steps": 10, **kwargs})


def test_insertion_at_a_fixed_step_is_recorded_and_preserves_the_function():
    data = toy_data()
    policy = insertion(AtSteps((20,)))
    trainer = Trainer(make_net(), data, TrainConfig(steps=40, lr=0.3), policy=policy)
    seen = {}

    def on_growth(t):
        seen["logits_after"] = t.net(data.x_train).detach()

    def on_step_end(t):
        if t.step == 20:
            seen["logits_before"] = t.net(data.x_train).detach()

    trainer.add_callback("on_step_end", on_step_end)
    trainer.add_callback("on_growth", on_growth)
    result = trainer.fit()
    (event,) = result.events
    assert event.step == 20 and event.kind == "layer"
    assert event.spec_after.widths == (8, 8) and event.params_after == event.params_before + 72
    assert torch.allclose(seen["logits_after"], seen["logits_before"], atol=1e-6)
    depths = [r["depth"] for r in result.history]
    assert depths[:20] == [1] * 20 and set(depths[20:]) == {2}
    assert result.growth_flops == event.details["scoring_flops"] > 0
    steps_flops = 20 * train_step_flops(SPEC, 96) + 20 * train_step_flops(event.spec_after, 96)
    assert result.flops == steps_flops + result.growth_flops


def test_budget_stops_insertion():
    policy = insertion(AtSteps((5, 10, 15)), max_depth=2)
    result = Trainer(make_net(), toy_data(), TrainConfig(steps=20), policy=policy).fit()
    assert [e.step for e in result.events] == [5]
    policy = insertion(AtSteps((5,)), max_params=50)
    assert not Trainer(make_net(), toy_data(), TrainConfig(steps=8), policy=policy).fit().events


def test_adam_state_follows_surviving_weights_and_new_layer_starts_empty():
    data = toy_data()
    policy = insertion(AtSteps((10,)))
    config = TrainConfig(steps=10, lr=1e-2, optimizer="adam")
    trainer = Trainer(make_net(SPEC), data, config, policy=policy)
    old_opt_state = {}

    def remember(t):
        if t.step == 10:
            params = dict(t.net.named_parameters())
            old_opt_state.update(
                {n: t.optimizer.state[p]["exp_avg"].clone() for n, p in params.items()}
            )

    trainer.add_callback("on_step_end", remember)
    trainer.fit()
    params = dict(trainer.net.named_parameters())
    state = trainer.optimizer.state
    assert torch.equal(
        state[params["hidden.0.weight"]]["exp_avg"], old_opt_state["hidden.0.weight"]
    )
    assert torch.equal(state[params["out.weight"]]["exp_avg"], old_opt_state["out.weight"])
    assert params["hidden.1.weight"] not in state  # the inserted layer


def test_carry_optimizer_state_pads_grown_parameters():
    old = torch.nn.Linear(3, 2)
    new = torch.nn.Linear(3, 4)
    opt_old = torch.optim.Adam(old.parameters())
    old(torch.randn(5, 3)).sum().backward()
    opt_old.step()
    opt_new = torch.optim.Adam(new.parameters())
    carry_optimizer_state(opt_old, old, opt_new, new, {"weight": "weight", "bias": "bias"})
    avg = opt_new.state[new.weight]["exp_avg"]
    assert avg.shape == (4, 3)
    assert torch.equal(avg[:2], opt_old.state[old.weight]["exp_avg"])
    assert torch.all(avg[2:] == 0)


def test_plateau_trigger_fires_when_the_loss_stalls():
    class Fake:
        def __init__(self, losses):
            self.history = [{"loss": v} for v in losses]
            self.step = len(losses)

    trigger = OnPlateau(window=10, threshold=0.05)
    falling = [1.0 - 0.02 * i for i in range(40)]
    flat = [1.0] * 20 + [0.999] * 20
    assert not trigger.fires(Fake(falling), last_growth_step=0)
    assert trigger.fires(Fake(flat), last_growth_step=0)
    assert not trigger.fires(Fake(flat), last_growth_step=30)  # too soon after a growth
    assert not trigger.fires(Fake(flat[:-5]), last_growth_step=0)  # not at a window boundary


def test_policy_settings_round_trip():
    policy = insertion(OnPlateau(window=20, threshold=0.03), score="v1", max_depth=4)
    again = DepthWidthPolicy.from_dict(policy.to_dict())
    assert again.to_dict() == policy.to_dict()
    assert again.to_dict()["depth"] == {
        "score": "v1", "selection": "max", "max_depth": 4, "score_batches": None
    }  # fmt: skip


def test_a_diverged_run_stops_with_a_named_error():
    net = make_net()
    with torch.no_grad():
        next(net.parameters())[0, 0] = float("nan")  # as a blown-up step leaves it
    trainer = Trainer(net, toy_data(), TrainConfig(steps=5, lr=0.1))
    with pytest.raises(train.DivergedError, match="diverged|not finite"):
        trainer.fit()


def test_an_evaluation_of_non_finite_outputs_is_refused():
    trainer = Trainer(make_net(), toy_data(), TrainConfig(steps=1, lr=0.1))
    trainer.fit()
    with torch.no_grad():
        next(trainer.net.parameters()).fill_(float("inf"))
    with pytest.raises(train.DivergedError, match="test loss"):
        trainer.evaluate()


@pytest.mark.parametrize("at", ["epoch end", "growth"])
@pytest.mark.parametrize("strategy", ["tiny", "random"])
def test_a_resumed_run_continues_exactly_as_the_uninterrupted_one(at, strategy):
    # 6 epochs of 3 steps; width growth (fixed statistics draw) and depth, decisions at steps
    # 3, 6, 9: saved at an epoch end (before that step's decision) or right after a growth, the
    # run is rebuilt from the saved network and state and must end where the other one ends
    from growth_core.growth import AtFractions, WidthGrowth
    from growth_core.spec import ArchitectureSpec as Spec

    data = toy_data(n=96)
    config = TrainConfig(epochs=6, batch_size=32, lr=0.05, seed=3)

    def policy():
        return DepthWidthPolicy(
            AtFractions((0.17, 0.34, 0.5)),
            width=WidthGrowth(strategy, samples="fixed", ridge=1.0),
            depth=DepthGrowth(max_depth=2),
            seed=5,
        )

    whole = Trainer(make_net(), data, config, policy=policy())
    whole.fit()
    saved = {}

    def save(trainer):
        if saved or not trainer.events:
            return
        if at == "growth" or trainer.step % trainer.steps_per_epoch == 0:
            saved.update(
                spec=trainer.net.spec.to_dict(),
                weights={k: v.clone() for k, v in trainer.net.state_dict().items()},
                state=trainer.state_dict(),
            )

    first = Trainer(make_net(), data, config, policy=policy())
    first.add_callback("on_growth" if at == "growth" else "on_step_end", save)
    first.fit()
    assert saved and saved["state"]["step"] < whole.step
    net = build(Spec.from_dict(saved["spec"]))
    net.load_state_dict(saved["weights"])
    resumed = Trainer(net, data, config, policy=policy())
    resumed.load_state_dict(saved["state"])
    resumed.fit()
    assert [e.to_dict() for e in resumed.events] == [e.to_dict() for e in whole.events]
    assert resumed.net.spec == whole.net.spec and resumed.flops == whole.flops
    for p, q in zip(resumed.net.parameters(), whole.net.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [r.get("loss") for r in resumed.history] == [r.get("loss") for r in whole.history]
