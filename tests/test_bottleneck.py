import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from growth_core.flops import forward_flops
from growth_core.growth import bottleneck
from growth_core.nets import build
from growth_core.spec import ArchitectureSpec, SpecError
from growth_core.train import carry_optimizer_state

MLP = ArchitectureSpec(6, 4, (5, 3), "tanh")
RES = ArchitectureSpec(6, 4, (3, 2), "tanh", residual=True, width=5)
STRATEGIES = [
    bottleneck.TinyGrowth,
    bottleneck.TinyWithUpdateGrowth,
    bottleneck.GradMaxGrowth,
    bottleneck.RandomGrowth,
]
EVERY = bottleneck.SingularValueThreshold(0.0)


def half_squared_error(z, t):
    """Per-sample ``||z - t||^2 / 2``, averaged over the batch."""
    return 0.5 * (z - t).square().sum(1).mean()


def net_and_data(spec, seed=0, n=64, dtype=torch.float64):
    torch.manual_seed(seed)
    net = build(spec).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, spec.input_dim, generator=gen, dtype=dtype)
    y = torch.randint(0, spec.output_dim, (n,), generator=gen)
    return net, x, y


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# -- closed forms ----------------------------------------------------------------------------------
def test_best_update_of_a_linear_output_layer_is_the_least_squares_refit():
    """Squared loss: ``[W | b] + dW*`` is the least-squares fit of the targets on ``[h, 1]``, and
    the previewed loss is exactly ``L - g d + g^2 d / 2`` (``d = tr(M dW*)``), lowest at 1."""
    spec = ArchitectureSpec(3, 2, (3,), "identity")  # as wide as the input: no bottleneck
    net, x, _ = net_and_data(spec)
    targets = torch.randn(64, 2, dtype=torch.float64)
    stats = bottleneck.bottleneck_statistics(net, [(x, targets)], loss_fn=half_squared_error)
    plan = bottleneck.bottlenecks(stats, EVERY)[0]
    assert plan.gain < 1e-12  # V_proj is orthogonal to [x, 1]
    proposal = bottleneck.TinyWithUpdateGrowth().propose(stats, 0, 1)
    b = torch.cat([net.hidden[0](x), torch.ones(64, 1, dtype=torch.float64)], dim=1)
    refit = torch.linalg.lstsq(b, targets).solution.T
    current = torch.cat([net.out.weight, net.out.bias[:, None]], dim=1)
    assert torch.allclose(current + proposal.neurons.weight_update, refit, atol=1e-10)

    decrease = plan.update_decrease
    loss0 = half_squared_error(net(x), targets).item()
    for gamma in (0.25, 1.0, 3.0):
        previewed, _ = proposal.loss([(x, targets)], gamma, loss_fn=half_squared_error)
        assert previewed == pytest.approx(loss0 - gamma * decrease + gamma**2 * decrease / 2)
    for gammas in [(0.5, 1.0, 2.0), (0.125,)]:  # the second grid is extended by doubling
        search = proposal.line_search([(x, targets)], gammas=gammas, loss_fn=half_squared_error)
        assert search.gamma == 1.0
    assert sorted(search.losses) == [0.0, 0.125, 0.25, 0.5, 1.0, 2.0]


def test_tiny_neurons_are_the_reduced_rank_regression_of_the_bottleneck():
    """Linear net with a 1-neuron bottleneck: all neurons together give the least-squares fit of
    ``V_proj`` on ``[x, 1]``; the top one lowers ``||V_proj||^2 / n`` by exactly ``lambda_1^2``."""
    spec = ArchitectureSpec(4, 3, (1,), "identity")
    net, x, _ = net_and_data(spec, seed=1, n=80)
    targets = x @ torch.randn(4, 3, dtype=torch.float64)
    stats = bottleneck.bottleneck_statistics(net, [(x, targets)], loss_fn=half_squared_error)
    plan = bottleneck.bottlenecks(stats, EVERY)[0]
    new = bottleneck.TinyWithUpdateGrowth().propose(stats, 0, plan.neurons).neurons

    b = torch.cat([net.hidden[0](x), torch.ones(80, 1, dtype=torch.float64)], dim=1)
    b2 = torch.cat([x, torch.ones(80, 1, dtype=torch.float64)], dim=1)
    v_proj = (targets - net(x)) - b @ new.weight_update.T
    assert torch.allclose(new.fan_in.T @ new.fan_out.T, torch.linalg.lstsq(b2, v_proj).solution)

    top = b2 @ new.fan_in[:1].T @ new.fan_out[:, :1].T
    residual = (v_proj - top).square().sum() / 80
    assert residual.item() == pytest.approx(
        v_proj.square().sum().item() / 80 - plan.gains[0].item()
    )


def test_ridge_turns_the_fit_of_the_bottleneck_into_ridge_regression():
    """All neurons together fit ``V_proj`` on ``[x, 1]`` by ridge regression, the ridge
    ``rho * tr(S2) / d2`` (0: least squares, the test above)."""
    spec = ArchitectureSpec(4, 3, (1,), "identity")
    net, x, _ = net_and_data(spec, seed=1, n=80)
    targets = x @ torch.randn(4, 3, dtype=torch.float64)
    rho = 0.3
    stats = bottleneck.bottleneck_statistics(
        net, [(x, targets)], loss_fn=half_squared_error, ridge=rho
    )
    moments = stats.site(0).moments()
    new = bottleneck.TinyWithUpdateGrowth().propose(stats, 0, 3).neurons

    b = torch.cat([net.hidden[0](x), torch.ones(80, 1, dtype=torch.float64)], dim=1)
    b2 = torch.cat([x, torch.ones(80, 1, dtype=torch.float64)], dim=1)
    v_proj = (targets - net(x)) - b @ new.weight_update.T
    shift = rho * torch.trace(b2.T @ b2 / 80) / 5
    ridge_fit = torch.linalg.solve(b2.T @ b2 / 80 + shift * torch.eye(5), b2.T @ v_proj / 80)
    assert torch.allclose(new.fan_in.T @ new.fan_out.T, ridge_fit)
    assert torch.allclose(moments.tensor_s2, b2.T @ b2 / 80)  # the statistics are not shrunk
    with pytest.raises(ValueError, match="^ridge"):
        bottleneck.BottleneckStatistics(net, ridge=-1.0)


@pytest.mark.parametrize("spec", [MLP, RES], ids=["mlp", "residual"])
def test_first_order_loss_change_matches_the_statistics(spec):
    """The previewed loss falls at rate ``tr(M dW*) + act'(0) sum_k alpha_k^T M2 omega_k``."""
    net, x, y = net_and_data(spec)
    stats = bottleneck.bottleneck_statistics(net, [(x, y)])
    for site in bottleneck.sites(spec):
        proposal = bottleneck.TinyWithUpdateGrowth().propose(stats, site, 2)
        moments, new = stats.site(site).moments(), proposal.neurons
        rate = torch.trace(moments.tensor_m @ new.weight_update) + torch.einsum(
            "kd,do,ok->", new.fan_in, moments.tensor_m2, new.fan_out
        )
        eps = 1e-6
        slope = (proposal.loss([(x, y)], eps)[0] - proposal.loss([(x, y)], 0.0)[0]) / eps
        assert slope == pytest.approx(-rate.item(), rel=1e-3)


# -- function preservation -------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [bottleneck.GradMaxGrowth, bottleneck.RandomGrowth])
@pytest.mark.parametrize("spec", [MLP, RES], ids=["mlp", "residual"])
def test_gradmax_and_random_neurons_preserve_the_function(spec, strategy):
    net, x, y = net_and_data(spec, dtype=torch.float32)
    grown = bottleneck.widen(
        net, [(x, y)], strategy(), selection=EVERY, max_neurons=2, min_relative_gain=0.0
    )
    assert grown.gamma == 1.0 and grown.line_search_flops == 0
    assert sum(grown.change.spec.widths) == sum(spec.widths) + 2
    assert (grown.change.net(x) - net(x)).abs().max() < 1e-6
    new_params = dict(grown.change.net.named_parameters())
    for name, old in net.named_parameters():  # old neurons first, new ones appended
        assert torch.equal(
            new_params[grown.change.param_map[name]][tuple(map(slice, old.shape))], old
        )
    fan_in, fan_out = bottleneck.site_layers(spec, grown.site)
    added = new_params[f"{fan_in}.weight"][-2:]
    assert added.abs().sum() == 0 if strategy is bottleneck.GradMaxGrowth else added.any()


def test_gradmax_refuses_activations_whose_zero_fan_in_is_dead_or_not_silent():
    for activation in ("relu", "sigmoid"):
        net, x, y = net_and_data(ArchitectureSpec(6, 4, (5,), activation))
        with pytest.raises(SpecError, match="^activation"):
            bottleneck.widen(
                net, [(x, y)], bottleneck.GradMaxGrowth(), selection=EVERY, min_relative_gain=0
            )


# -- streaming statistics --------------------------------------------------------------------------
def test_statistics_do_not_depend_on_batching_or_loss_reduction():
    net, x, y = net_and_data(MLP, n=61)
    whole = bottleneck.bottleneck_statistics(net, [(x, y)])
    cuts = [0, 7, 8, 30, 61]
    pieces = [(x[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    split = bottleneck.bottleneck_statistics(net, pieces)
    summed = bottleneck.bottleneck_statistics(
        net, pieces, loss_fn=lambda z, t: F.cross_entropy(z, t, reduction="sum"), reduction="sum"
    )
    assert split.n == summed.n == whole.n == 61
    assert split.loss == pytest.approx(whole.loss) and summed.loss == pytest.approx(whole.loss)
    for other in (split, summed):
        for site in bottleneck.sites(MLP):
            for fold in (None, 0, 1):
                a, b = whole.site(site).moments(fold), other.site(site).moments(fold)
                assert a.n == b.n
                for name in bottleneck.MOMENTS:
                    assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-12)


def test_folds_alternate_samples_and_add_up_to_the_whole():
    net, x, y = net_and_data(MLP, n=9)
    stats = bottleneck.bottleneck_statistics(net, [(x[:4], y[:4]), (x[4:], y[4:])])
    even = bottleneck.bottleneck_statistics(net, [(x[0::2], y[0::2])]).site(1).moments()
    fold0, fold1, whole = (stats.site(1).moments(f) for f in (0, 1, None))
    assert (fold0.n, fold1.n) == (5, 4)
    assert torch.allclose(fold0.tensor_m2, even.tensor_m2, atol=1e-12)
    assert torch.allclose(5 * fold0.tensor_s + 4 * fold1.tensor_s, 9 * whole.tensor_s)


def test_a_precomputed_input_covariance_gives_the_same_moments_for_fewer_flops():
    net, x, y = net_and_data(MLP, n=61)
    pieces = [(x[:7], y[:7]), (x[7:30], y[7:30]), (x[30:], y[30:])]
    covariance = bottleneck.InputCovariance(pieces)
    assert covariance.flops == counted(lambda: bottleneck.InputCovariance(pieces))
    plain = bottleneck.bottleneck_statistics(net, pieces)
    cached = bottleneck.bottleneck_statistics(net, pieces, input_covariance=covariance)
    for site in bottleneck.sites(MLP):
        for fold in (None, 0, 1):
            a, b = plain.site(site).moments(fold), cached.site(site).moments(fold)
            for name in bottleneck.MOMENTS:
                assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-12)
    assert plain.flops - cached.flops == 2 * 61 * (MLP.input_dim + 1) ** 2
    stats = bottleneck.BottleneckStatistics(net, input_covariance=covariance)
    assert counted(lambda: stats.update(x, y)) == stats.flops


def test_an_input_covariance_of_other_samples_or_another_net_is_refused():
    net, x, y = net_and_data(MLP, n=40)
    covariance = bottleneck.InputCovariance([(x, y)])
    fewer = bottleneck.bottleneck_statistics(net, [(x[:30], y[:30])], input_covariance=covariance)
    with pytest.raises(ValueError, match="^input_covariance"):
        fewer.site(0).moments()
    other = bottleneck.bottleneck_statistics(net, [(x + 1, y)], input_covariance=covariance)
    with pytest.raises(ValueError, match="^input_covariance"):
        other.site(0)
    with pytest.raises(ValueError, match="^input_covariance"):
        bottleneck.BottleneckStatistics(build(RES), input_covariance=covariance)
    with pytest.raises(ValueError, match="^input_covariance"):
        wider = build(ArchitectureSpec(7, 4, (5, 3), "tanh"))
        bottleneck.BottleneckStatistics(wider, input_covariance=covariance)


@pytest.mark.parametrize("spec", [MLP, RES], ids=["mlp", "residual"])
@pytest.mark.parametrize("chosen", [None, [1]], ids=["all-sites", "last-site"])
def test_statistics_and_line_search_flops_match_torch_flop_counter(spec, chosen):
    net, x, y = net_and_data(spec, dtype=torch.float32)
    stats = bottleneck.BottleneckStatistics(net, sites=chosen)
    assert counted(lambda: stats.update(x, y)) == stats.flops == stats.flops_per_batch(64)
    proposal = bottleneck.TinyGrowth().propose(stats, stats.sites[-1], 2)
    with torch.no_grad():
        assert counted(lambda: proposal.forward(x, 0.5)) == forward_flops(proposal.spec, 64)
    search = proposal.line_search([(x, y)], gammas=(0.5, 1.0))
    assert search.flops == len(search.losses) * forward_flops(proposal.spec, 64)


# -- previewing, applying, stopping ----------------------------------------------------------------
@pytest.mark.parametrize("spec", [MLP, RES], ids=["mlp", "residual"])
def test_line_search_previews_without_committing_and_apply_matches_the_preview(spec):
    net, x, y = net_and_data(spec)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = bottleneck.bottleneck_statistics(net, [(x, y)])
    proposal = bottleneck.TinyWithUpdateGrowth().propose(stats, 0, 2)
    search = proposal.line_search([(x, y)])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert search.losses[0.0] == pytest.approx(stats.loss)
    assert search.losses[search.gamma] < stats.loss
    grown = proposal.apply(search.gamma)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.allclose(grown.net(x), proposal.forward(x, search.gamma))
    loss = F.cross_entropy(grown.net(x), y).item()
    assert loss == pytest.approx(search.losses[search.gamma])


@pytest.mark.parametrize("strategy", STRATEGIES[:2])
@pytest.mark.parametrize("spec", [MLP, RES], ids=["mlp", "residual"])
def test_widen_widens_the_best_site_and_lowers_the_loss(spec, strategy):
    net, x, y = net_and_data(spec)
    grown = bottleneck.widen(net, [(x, y)], strategy(), selection=EVERY, max_neurons=3)
    assert set(grown.scores) == set(bottleneck.sites(spec))
    assert grown.site == max(grown.scores, key=grown.scores.get)
    assert grown.change.spec == bottleneck.widened_spec(spec, grown.site, grown.neurons)
    assert 1 <= grown.neurons <= 3 and len(grown.gains) == grown.neurons
    assert grown.loss_after < grown.loss
    assert F.cross_entropy(grown.change.net(x), y).item() == pytest.approx(grown.loss_after)
    assert grown.flops == grown.statistics_flops + grown.line_search_flops > 0
    details = grown.event(7, net).details
    assert set(details) >= {"neurons", "gamma", "scores", "statistics_flops", "scoring_flops"}
    assert grown.event(7, net).spec_after == grown.change.spec


def test_optimizer_state_carries_over_to_the_widened_network():
    net, x, y = net_and_data(MLP, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters())
    F.cross_entropy(net(x), y).backward()
    opt.step()
    grown = bottleneck.widen(net, [(x, y)], bottleneck.RandomGrowth(), selection=EVERY)
    new_opt = torch.optim.Adam(grown.change.net.parameters())
    carry_optimizer_state(opt, net, new_opt, grown.change.net, grown.change.param_map)
    name = f"{bottleneck.site_layers(MLP, grown.site)[0]}.weight"
    old_p, new_p = (
        dict(net.named_parameters())[name],
        dict(grown.change.net.named_parameters())[name],
    )
    state = new_opt.state[new_p]["exp_avg"]
    assert torch.equal(state[: len(old_p)], opt.state[old_p]["exp_avg"])
    assert not state[len(old_p) :].any()


def test_growth_stops_when_no_bottleneck_is_left():
    """A linear net as wide as its input can fit any affine map: nothing to add."""
    spec = ArchitectureSpec(3, 2, (3,), "identity")
    net, x, _ = net_and_data(spec)
    targets = torch.randn(64, 2, dtype=torch.float64)
    grown = bottleneck.widen(
        net, [(x, targets)], bottleneck.TinyGrowth(), selection=EVERY, loss_fn=half_squared_error
    )
    assert grown.change is None and grown.statistics_flops > 0


def test_held_out_gain_adds_no_neuron_for_noise_but_keeps_real_bottlenecks():
    """Uniform random labels and a net that already predicts the uniform distribution: the
    gradients are pure noise. GroMo's fixed threshold keeps noise neurons, with a fitted gain
    that shrinks like 1/n; the held-out test keeps none. A teacher that needs more neurons than
    the student has: the held-out test keeps them."""
    spec = ArchitectureSpec(20, 5, (2,), "tanh")
    fixed, held_out = bottleneck.SingularValueThreshold(), bottleneck.HeldOutGain()
    fitted = {}
    for n in (200, 2000):
        net, x, noise = net_and_data(spec, n=n)
        with torch.no_grad():
            net.out.weight.zero_()
            net.out.bias.zero_()
        on_noise = bottleneck.bottleneck_statistics(net, [(x, noise)])
        fitted[n] = bottleneck.bottlenecks(on_noise, fixed)[0]
        assert fitted[n].neurons >= 3
        assert bottleneck.bottlenecks(on_noise, held_out)[0].neurons == 0
        assert bottleneck.widen(net, [(x, noise)], bottleneck.TinyGrowth()).change is None
    assert fitted[2000].relative_gain < fitted[200].relative_gain / 5

    net, x, _ = net_and_data(spec, n=200)
    teacher = torch.tanh(x @ torch.randn(20, 5, dtype=torch.float64))
    on_signal = bottleneck.bottleneck_statistics(net, [(x, teacher)], loss_fn=half_squared_error)
    assert bottleneck.bottlenecks(on_signal, held_out)[0].neurons >= 3


# -- bad input -------------------------------------------------------------------------------------
def test_bad_input_errors_name_the_field():
    net, x, y = net_and_data(MLP)
    tiny = bottleneck.TinyGrowth()
    cases = [
        ("^reduction", lambda: bottleneck.BottleneckStatistics(net, reduction="max")),
        ("^sites", lambda: bottleneck.BottleneckStatistics(net, sites=[2])),
        ("^x", lambda: bottleneck.BottleneckStatistics(net).update(x[:, :3], y)),
        ("^batches", lambda: bottleneck.bottleneck_statistics(net, [])),
        (
            "^loss_fn",
            lambda: bottleneck.bottleneck_statistics(
                net, [(x, y)], loss_fn=lambda z, t: F.cross_entropy(z, t, reduction="none")
            ),
        ),
        ("^widths", lambda: bottleneck.sites(ArchitectureSpec(6, 4, ()))),
        ("^site", lambda: bottleneck.site_layers(MLP, 5)),
        ("^max_neurons", lambda: bottleneck.widen(net, [(x, y)], tiny, max_neurons=0)),
        (
            "^min_relative_gain",
            lambda: bottleneck.widen(net, [(x, y)], tiny, min_relative_gain=-1),
        ),
        ("^threshold", lambda: bottleneck.SingularValueThreshold(-1.0)),
        ("^z", lambda: bottleneck.HeldOutGain(z=-1.0)),
        (
            "^batches",
            lambda: bottleneck.bottlenecks(bottleneck.bottleneck_statistics(net, [(x[:1], y[:1])])),
        ),
    ]
    stats = bottleneck.bottleneck_statistics(net, [(x, y)])
    proposal = tiny.propose(stats, 0, 1)
    cases += [
        ("^neurons", lambda: tiny.propose(stats, 0, 0)),
        ("^gamma", lambda: proposal.forward(x, -1.0)),
        ("^gammas", lambda: proposal.line_search([(x, y)], gammas=())),
        ("^batches", lambda: proposal.line_search([])),
    ]
    for pattern, call in cases:
        with pytest.raises(ValueError, match=pattern):
            call()
