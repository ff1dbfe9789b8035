"""Lottery tickets: masks per level, rewinding, controls, determinism, bad configs.

Oracles: integer recursions for the survivor counts, the magnitude order of kept vs pruned
weights, an independent k-step training run for theta_k, and torch.equal on saved states.
"""

from __future__ import annotations

import json

import pytest
import torch

from compresslab.core import models, training
from compresslab.core.data import Dataset, Split
from compresslab.techniques import imp, lottery
from compresslab.techniques.lottery import LotteryConfig
from compresslab.techniques.masks import current_masks, set_masks
from compresslab.views import lottery as lottery_views


def synthetic(n_train: int = 120, n_val: int = 40, n_test: int = 40, seed: int = 0) -> Dataset:
    """Digits drawn as a bright bar at a class-dependent row, on uniform noise."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        y = torch.randint(0, 10, (n,), generator=gen)
        x = torch.randint(0, 80, (n, 28, 28), generator=gen).to(torch.uint8)
        for i, c in enumerate(y.tolist()):
            x[i, 2 * c + 4: 2 * c + 6, 4:24] = 255
        return Split(x, y, 0.2, 0.3)

    return Dataset("synthetic", split(n_train), split(n_test), split(n_val), tuple("0123456789"),
                   {"name": "synthetic", "seed": seed})


TINY_TRAIN = training.TrainConfig(epochs=2, batch_size=30, lr=1e-2, optimizer="adam", eval_every=2)


def tiny_model(seed: int = 0):
    training.seed_everything(seed)
    return models.mlp((20, 12))


def effective(net) -> dict[str, torch.Tensor]:
    return imp.effective_weights(net)


# ----------------------------------------------------------------- masks per level

def test_prune_survivors_removes_exact_count_of_smallest():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(40, 30, generator=gen)
    mask = (torch.rand(40, 30, generator=gen) > 0.3).float()
    n = int(mask.sum())
    new = imp.prune_survivors(w, mask, 0.2)
    assert int(new.sum()) == n - round(0.2 * n)
    assert torch.all(new <= mask)  # nested: a pruned weight never returns
    dropped = (mask - new).bool()
    assert w[new.bool()].abs().min() >= w[dropped].abs().max()


def test_layer_rates_and_counts_follow_the_recursion_per_level():
    cfg = LotteryConfig(levels=8, fraction=0.2, output_fraction=0.1)
    gen = torch.Generator().manual_seed(1)
    shapes = {"fc1": (50, 40), "fc2": (30, 50), "fc3": (10, 30)}
    masks = {n: torch.ones(s) for n, s in shapes.items()}
    sizes = {n: masks[n].numel() for n in shapes}
    rates = cfg.rates(list(shapes))
    assert rates == {"fc1": 0.2, "fc2": 0.2, "fc3": 0.1}
    expected = dict(sizes)
    for level in range(1, cfg.levels + 1):
        weights = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}  # "retrained" weights
        new = lottery.next_masks(weights, masks, cfg)
        expected = {n: c - round(rates[n] * c) for n, c in expected.items()}
        assert {n: int(m.sum()) for n, m in new.items()} == expected
        assert imp.layer_keep_counts(sizes, rates, level) == expected
        for n in shapes:
            assert torch.all(new[n] <= masks[n])
            assert abs(expected[n] - sizes[n] * (1 - rates[n]) ** level) <= level  # ~(1-p)^L of the layer
        masks = new


def test_global_scope_pools_hidden_layers_and_keeps_the_output_rate():
    cfg = LotteryConfig(scope="global", fraction=0.3, output_fraction=0.1)
    gen = torch.Generator().manual_seed(2)
    weights = {"fc1": 2 * torch.randn(20, 10, generator=gen), "fc2": torch.randn(15, 20, generator=gen),
               "fc3": torch.randn(10, 15, generator=gen)}
    masks = {n: (torch.rand(w.shape, generator=gen) > 0.2).float() for n, w in weights.items()}
    new = lottery.next_masks(weights, masks, cfg)
    pooled = int(masks["fc1"].sum() + masks["fc2"].sum())
    assert int(new["fc1"].sum() + new["fc2"].sum()) == pooled - round(0.3 * pooled)
    out = int(masks["fc3"].sum())
    assert int(new["fc3"].sum()) == out - round(0.1 * out)
    kept = torch.cat([weights[n][new[n].bool()].abs() for n in ("fc1", "fc2")])
    dropped = torch.cat([weights[n][(masks[n] - new[n]).bool()].abs() for n in ("fc1", "fc2")])
    assert kept.min() >= dropped.max()  # one threshold across the pooled layers
    both = LotteryConfig(scope="global", fraction=0.3, output_fraction=None)
    new_all = lottery.next_masks(weights, masks, both)
    total = sum(int(m.sum()) for m in masks.values())
    assert sum(int(m.sum()) for m in new_all.values()) == total - round(0.3 * total)


def test_random_masks_match_counts_and_nest_with_fixed_scores():
    gen = torch.Generator().manual_seed(3)
    shapes = {"a": torch.Size((30, 20)), "b": torch.Size((10, 30))}
    scores = imp.random_scores(shapes, seed=5)
    big = {n: (torch.rand(s, generator=gen) > 0.4).float() for n, s in shapes.items()}
    small = {n: imp.prune_survivors(torch.randn(s, generator=gen), big[n], 0.5) for n, s in shapes.items()}
    r_big, r_small = imp.random_masks_like(big, scores), imp.random_masks_like(small, scores)
    for n in shapes:
        assert int(r_big[n].sum()) == int(big[n].sum()) and int(r_small[n].sum()) == int(small[n].sum())
        assert torch.all(r_small[n] <= r_big[n])
    again = imp.random_masks_like(big, imp.random_scores(shapes, seed=5))
    other = imp.random_masks_like(big, imp.random_scores(shapes, seed=6))
    assert all(torch.equal(again[n], r_big[n]) for n in shapes)
    assert not all(torch.equal(other[n], r_big[n]) for n in shapes)


# ----------------------------------------------------------------- rewinding and reinitialisation

def test_rewind_restores_saved_values_on_survivors_and_zero_elsewhere():
    model = tiny_model()
    saved = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(4)
    masks = {n: (torch.rand(w.shape, generator=gen) > 0.5).float() for n, w in effective(model).items()}
    net = imp.rewind(model, saved, masks)
    for name, layer in models.prunable_layers(net).items():
        keep = masks[name].bool()
        assert torch.equal(layer.weight[keep], saved[f"{name}.weight"][keep])
        assert torch.all(layer.weight[~keep] == 0)
        assert torch.equal(layer.bias, saved[f"{name}.bias"])
    assert torch.equal(model.state_dict()["fc1.weight"], tiny_model().state_dict()["fc1.weight"])  # untouched


def test_reinitialize_is_seeded_and_keeps_the_global_rng():
    model = tiny_model()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = imp.reinitialize(model, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # fork_rng: the caller's stream is untouched
    b, c = imp.reinitialize(model, seed=7), imp.reinitialize(model, seed=8)
    sa, sb, sc, s0 = (m.state_dict() for m in (a, b, c, model))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["fc1.weight"], sc["fc1.weight"])
    assert not torch.equal(sa["fc1.weight"], s0["fc1.weight"])
    bound = 1 / 784 ** 0.5  # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert sa["fc1.weight"].abs().max() <= bound


def test_rewind_refuses_a_pruned_template():
    model = tiny_model()
    set_masks(model, {"fc1": torch.ones(20, 784)})
    with pytest.raises(ValueError, match="already carries pruning masks"):
        imp.rewind(model, {}, {})


def test_resuming_at_step_k_replays_the_full_run():
    """train(start_step=k) from theta_k gives the full run's theta_T (plain SGD, step schedule):
    the learning rate and batch order at steps k..T are those of the full run."""
    data = synthetic(n_train=100)
    cfg = training.TrainConfig(epochs=3, batch_size=30, lr=0.05, momentum=0.0, lr_schedule="step")
    full = tiny_model()
    saver = imp.RewindPoint([6])
    training.train(full, data, cfg, callbacks=[saver], evaluate_test=False)
    resumed = tiny_model()
    resumed.load_state_dict(saver.states[6])
    history = training.train(resumed, data, cfg, start_step=6, evaluate_test=False)
    assert history.steps[0] > 6 and history.steps[-1] == cfg.total_steps(100)
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(ValueError, match="start_step"):
        training.train(tiny_model(), data, cfg, start_step=cfg.total_steps(100))


# ----------------------------------------------------------------- the whole procedure

class StartWeights(training.Callback):
    """Records every run's start step, starting effective weights and biases, and the model itself
    (which holds its trained weights once the run is over)."""

    def __init__(self):
        self.starts = []

    def on_train_start(self, state):
        biases = {n: m.bias.detach().clone() for n, m in models.prunable_layers(state.model).items()}
        self.starts.append((state.step, effective(state.model), biases, state.model))


ALL = ("ticket", "random_reinit", "random_mask", "lr_rewind")


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def run(data):
    cfg = LotteryConfig(levels=3, fraction=0.4, output_fraction=0.2, rewind_step=3, train=TINY_TRAIN, branches=ALL)
    recorder = StartWeights()
    dense = lottery.train_dense(tiny_model(), data, TINY_TRAIN, rewind_steps=(0, 3))
    net, report = lottery.apply_lottery(tiny_model(), cfg, data, dense=dense, callbacks=[recorder], progress=False)
    return cfg, net, report, recorder, dense


def test_masks_nest_and_hit_exact_per_layer_counts(run):
    cfg, net, report, _, _ = run
    sizes = {n: m.numel() for n, m in report.masks["ticket"][0].items()}
    rates = cfg.rates(list(sizes))
    for branch in ("ticket", "random_mask", "lr_rewind"):
        for level in range(1, cfg.levels + 1):
            now, before = report.masks[branch][level], report.masks[branch][level - 1]
            assert {n: int(m.sum()) for n, m in now.items()} == imp.layer_keep_counts(sizes, rates, level)
            assert all(torch.all(now[n] <= before[n]) for n in now)
    final = report.masks["ticket"][cfg.levels]
    assert all(torch.equal(current_masks(net)[n], final[n]) for n in final)


def test_controls_run_at_the_tickets_sparsity(run):
    cfg, _, report, _, _ = run
    for level in range(1, cfg.levels + 1):
        ticket = report.get("ticket", level)
        for branch in ALL[1:]:
            other = report.get(branch, level)
            assert other.layer_density == ticket.layer_density
            assert other.remaining == pytest.approx(ticket.remaining)
        assert not torch.equal(report.masks["random_mask"][level]["fc1"], report.masks["ticket"][level]["fc1"])


def test_rewind_state_is_theta_k_of_an_independent_run(run, data):
    cfg, _, report, _, _ = run

    class StopAt(training.Callback):
        def on_batch_end(self, state):
            state.stop = state.step >= cfg.rewind_step

    net = tiny_model()
    training.train(net, data, cfg.train, callbacks=[StopAt()], evaluate_test=False)
    assert all(torch.equal(v, report.rewind_state[k]) for k, v in net.state_dict().items())
    assert all(torch.equal(v, report.init_state[k]) for k, v in tiny_model().state_dict().items())


def test_every_branch_starts_from_the_right_weights(run):
    cfg, _, report, recorder, dense = run
    k, theta_k = cfg.rewind_step, report.rewind_state
    assert len(recorder.starts) == 4 * cfg.levels  # ticket, reinit, random mask, lr rewind per level
    previous = dense.model  # lr rewinding keeps the trained values of the level before
    for level in range(1, cfg.levels + 1):
        starts = dict(zip(ALL, recorder.starts[4 * (level - 1): 4 * level], strict=True))
        ticket_mask, rand_mask = report.masks["ticket"][level], report.masks["random_mask"][level]
        for branch, (step, weights, biases, _) in starts.items():
            assert step == k  # every run resumes at step k
            mask = {"random_mask": rand_mask, "lr_rewind": report.masks["lr_rewind"][level]}.get(branch, ticket_mask)
            trained = effective(previous)
            for n, w in weights.items():
                keep = mask[n].bool()
                assert torch.all(w[~keep] == 0)
                if branch in ("ticket", "random_mask"):  # rewound: exactly theta_k on the survivors
                    assert torch.equal(w[keep], theta_k[f"{n}.weight"][keep])
                    assert torch.equal(biases[n], theta_k[f"{n}.bias"])
                elif branch == "random_reinit":  # a fresh, seeded draw
                    fresh = imp.reinitialize(tiny_model(), lottery._control_seed(cfg.reinit_seed, level))
                    assert torch.equal(w[keep], fresh.state_dict()[f"{n}.weight"][keep])
                    assert not torch.equal(w[keep], theta_k[f"{n}.weight"][keep])
                else:
                    assert torch.equal(w[keep], trained[n][keep])
                    assert torch.equal(biases[n], previous.get_submodule(n).bias.detach())
        previous = starts["lr_rewind"][3]
    assert report.dense.early_stop_step in report.dense.history["steps"]


def test_report_records_levels_accuracy_and_early_stopping(run):
    cfg, _, report, _, _ = run
    table = report.table()
    assert list(table["level"]) == list(range(cfg.levels + 1))
    for r in report.results:
        assert 0.0 <= r.test_accuracy <= 100.0
        assert r.test_accuracy == r.history["test_accuracy"][-1]
        steps = r.history["steps"]
        best = steps[min(range(len(steps)), key=lambda i: r.history["val_loss"][i])]
        assert r.early_stop_step == best
        assert (r.level == 0 and steps[0] > 0) or steps[0] > cfg.rewind_step
    curve = report.curve("ticket")
    assert [r.level for r in curve] == list(range(cfg.levels + 1))
    assert [r.remaining for r in curve] == sorted((r.remaining for r in curve), reverse=True)
    json.dumps(report.to_dict())


def test_same_seeds_same_numbers_other_seeds_other_controls(data):
    base = dict(levels=2, fraction=0.5, rewind_step=0, train=TINY_TRAIN, branches=ALL[:3])
    _, a = lottery.apply_lottery(tiny_model(), LotteryConfig(**base), data, progress=False)
    _, b = lottery.apply_lottery(tiny_model(), LotteryConfig(**base), data, progress=False)
    assert [r.test_accuracy for r in a.results] == [r.test_accuracy for r in b.results]
    assert [r.history["val_loss"] for r in a.results] == [r.history["val_loss"] for r in b.results]
    for branch, masks in a.masks.items():
        assert all(torch.equal(masks[lv][n], b.masks[branch][lv][n]) for lv in masks for n in masks[lv])
    dense = lottery.train_dense(tiny_model(), data, TINY_TRAIN, rewind_steps=(0,))
    cfg = LotteryConfig(**{**base, "reinit_seed": 11, "random_mask_seed": 12})
    _, c = lottery.apply_lottery(tiny_model(), cfg, data, dense=dense, progress=False)
    assert c.dense.history["val_loss"] == a.dense.history["val_loss"]  # the same dense run, reused
    assert all(torch.equal(c.masks["ticket"][lv][n], a.masks["ticket"][lv][n]) for lv in (1, 2) for n in ("fc1",))
    assert not torch.equal(c.masks["random_mask"][1]["fc1"], a.masks["random_mask"][1]["fc1"])
    assert c.get("random_reinit", 1).history["val_loss"] != a.get("random_reinit", 1).history["val_loss"]


# ----------------------------------------------------------------- bad configs and inputs

@pytest.mark.parametrize("kwargs, field", [
    ({"levels": 0}, "levels"), ({"levels": 2.5}, "levels"), ({"fraction": 0.0}, "fraction"),
    ({"fraction": 1.0}, "fraction"), ({"output_fraction": 1.5}, "output_fraction"), ({"scope": "net"}, "scope"),
    ({"rewind_step": -1}, "rewind_step"), ({"train": {"epochs": 1}}, "train"), ({"branches": ()}, "branches"),
    ({"branches": ("ticket", "ticket")}, "branches"), ({"branches": ("winning",)}, "branches"),
    ({"branches": ("random_reinit",)}, "branches"), ({"control_levels": (0,)}, "control_levels"),
    ({"levels": 3, "control_levels": (4,)}, "control_levels"), ({"reinit_seed": 1.5}, "reinit_seed"),
])
def test_bad_configs_name_the_field(kwargs, field):
    with pytest.raises((ValueError, TypeError), match=field):
        LotteryConfig(**kwargs)


def test_bad_inputs(data):
    cfg = LotteryConfig(levels=1, train=TINY_TRAIN)
    total = TINY_TRAIN.total_steps(len(data.train))
    with pytest.raises(ValueError, match="rewind_step"):
        lottery.apply_lottery(tiny_model(), LotteryConfig(levels=1, train=TINY_TRAIN, rewind_step=total), data)
    no_val = Dataset("synthetic", data.train, data.test, None, data.classes, {})
    with pytest.raises(ValueError, match="validation split"):
        lottery.apply_lottery(tiny_model(), cfg, no_val)
    pruned = tiny_model()
    set_masks(pruned, {"fc1": torch.ones(20, 784)})
    with pytest.raises(ValueError, match="masks"):
        lottery.apply_lottery(pruned, cfg, data)
    dense = lottery.train_dense(tiny_model(), data, TINY_TRAIN, rewind_steps=(0,))
    with pytest.raises(ValueError, match="rewind_step=2"):
        lottery.apply_lottery(tiny_model(), LotteryConfig(levels=1, train=TINY_TRAIN, rewind_step=2), data, dense=dense)
    with pytest.raises(ValueError, match="initialisation"):
        lottery.apply_lottery(tiny_model(seed=9), cfg, data, dense=dense)


# ----------------------------------------------------------------- views and figures

def test_pixel_density_is_the_mean_kept_per_input_pixel():
    mask = torch.ones(5, 784)
    mask[:, 0] = 0
    mask[:2, 29] = 0
    image = lottery.pixel_density(mask)
    assert image.shape == (28, 28)
    assert image[0, 0] == 0 and image[1, 1] == pytest.approx(3 / 5) and image[27, 27] == 1
    assert lottery.pixel_density(torch.ones(5, 100)) is None


def test_level_view_and_figures(run):
    import matplotlib.pyplot as plt


    cfg, _, report, _, _ = run
    for branch in ALL:
        view = lottery_views.level_view(report, cfg.levels, branch)
        result = report.get(branch, cfg.levels)
        assert view.metrics["test accuracy %"] == round(result.test_accuracy, 2)
        assert view.metrics["weights remaining %"] == round(100 * result.remaining, 2)
        assert view.metrics["early-stop step"] == result.early_stop_step
        assert len(view.figure.axes) == 4  # curve, densities, pixel map and its colour bar
        plt.close(view.figure)
    assert lottery_views.level_view(report, 0, "ticket").metrics["branch"] == "dense"
    series = {b: report.series(b) for b in ALL}
    assert all(xs[0] == 100 and len(xs) == cfg.levels + 1 for xs, _ in series.values())
    fig = lottery_views.ticket_curves(series, "test accuracy", reference=report.dense.test_accuracy, band=0.3)
    assert len(fig.axes[0].get_lines()) == len(ALL) + 1
    runs = {f"level {r.level}": r.history for r in report.curve("ticket")}
    fig2 = lottery_views.learning_curves(runs)
    xs, _ = report.series("ticket")
    layers = {n: [100 * r.layer_density[n] for r in report.curve("ticket")] for n in report.dense.layer_density}
    fig3 = lottery_views.mask_density(xs, layers, lottery.pixel_density(report.masks["ticket"][cfg.levels]["fc1"]))
    assert len(fig3.axes[0].get_lines()) == len(layers) + 1
    for f in (fig, fig2, fig3):
        plt.close(f)
