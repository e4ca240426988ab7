"""Each mechanism of the plastic brain, checked on its own with small synthetic data."""

from __future__ import annotations

import torch

from models.learner import Replay
from models.plastic import Plastic
from tests.models.synthetic import class_incremental, clusters

DIM, CLASSES = 16, 4


def small(**params) -> Plastic:
    defaults = {"hidden": 64, "k": 8}
    return Plastic(input_dim=DIM, num_classes=CLASSES, seed=0, **{**defaults, **params})


def data(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _, _ = clusters(num_classes=CLASSES, dim=DIM, per_class=n, seed=seed)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[order], y[order]


def normalised(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True)


def test_exactly_k_units_are_active_per_sample():
    learner = small(k=8)
    x, _ = data()
    code = learner.encode(x)
    assert code.shape == (len(x), 64)
    assert ((code != 0).sum(dim=1) == 8).all()
    act = normalised(x) @ learner.w_enc.T
    winners = act.topk(8, dim=1).indices
    assert torch.equal(code.gather(1, winners), act.gather(1, winners))


def test_neurogenesis_recycles_a_dead_unit_toward_the_worst_represented_input():
    learner = small(max_new_per_step=1, newborn_step=0.5, core_lr=0.1, context_lr=0.5)
    x, y = data()
    learner.observe(x[:32], y[:32])
    batch = x[32:48]
    silent = (learner.encode(batch) == 0).all(dim=0) & (learner.stat_a.diagonal() == 0)
    unit = int(torch.nonzero(silent)[0])
    learner.freq[unit] = 0.0  # dead: it has not fired for a long time
    learner.w_core[:, unit] = 1.0
    learner.w_ctx[:, unit] = 1.0
    learner.importance[:, unit] = 0.5
    before = learner.w_enc[unit].clone()
    xn = normalised(batch)
    worst = xn[(xn @ learner.w_enc.T).max(dim=1).values.argmin()]

    stats = learner.observe(batch, y[32:48])

    assert stats.extra["new_units"] == 1
    after = learner.w_enc[unit]
    assert float(after @ worst) > float(before @ worst) + 0.2
    assert torch.allclose(after.norm(), torch.tensor(1.0))
    assert (learner.w_core[:, unit] == 0).all() and (learner.w_ctx[:, unit] == 0).all()
    assert (learner.importance[:, unit] == 0).all()
    assert (learner.stat_a[unit] == 0).all() and (learner.stat_a[:, unit] == 0).all()
    assert (learner.stat_b[unit] == 0).all()
    assert float(learner.freq[unit]) == learner.expected_rate


def test_neurogenesis_spares_mature_units_and_units_that_carry_statistics():
    learner = small(max_new_per_step=64)
    x, y = data()
    learner.observe(x[:32], y[:32])
    learner.freq.zero_()  # every unit looks dead ...
    learner.mature[:10] = True  # ... but these are mature
    carrying = learner.stat_a.diagonal() > 0
    kept = learner.mature | carrying
    before = learner.w_enc.clone()
    learner.observe(x[32:64], y[32:64])
    assert torch.equal(learner.w_enc[kept], before[kept])


def test_the_brake_stops_updates_of_fully_important_synapses():
    learner = small(core_lr=0.5)
    x, y = data()
    learner.observe(x[:32], y[:32])
    locked = torch.zeros_like(learner.importance, dtype=torch.bool)
    locked[:, :32] = True
    learner.importance[locked] = 1.0
    before = learner.w_core.clone()
    learner.observe(x[32:96], y[32:96])
    assert torch.equal(learner.w_core[locked], before[locked])
    assert not torch.equal(learner.w_core[~locked], before[~locked])


def test_partial_importance_scales_the_update():
    x, y = data()
    free, braked = small(core_lr=0.5), small(core_lr=0.5)
    braked.importance.fill_(0.75)
    free.observe(x[:32], y[:32])
    braked.observe(x[:32], y[:32])
    assert torch.allclose(braked.w_core, 0.25 * free.w_core, atol=1e-7)


def test_context_decays_by_its_factor_in_wake_and_in_sleep():
    x, y = data()
    learner = small(context_lr=1.0, sleep_context_decay=0.25)
    learner.observe(x[:32], y[:32])
    context = learner.w_ctx.clone()
    assert context.norm() > 0
    learner.sleep(Replay(x[:0], y[:0]))
    assert torch.allclose(learner.w_ctx, 0.25 * context)

    still = small(context_lr=0.0, context_decay=0.5)
    still.load_state_dict(learner.state_dict())
    before = still.w_ctx.clone()
    still.observe(x[32:64], y[32:64])
    assert torch.allclose(still.w_ctx.norm(), 0.5 * before.norm())


def test_memory_recalls_a_stored_sample_by_itself():
    learner = small(memory_weight=1.0, memory_k=1)
    x, y = data()
    learner.observe(x[:40], y[:40])
    probs = learner.predict(x[:40])
    assert torch.equal(probs.argmax(dim=1), y[:40])
    assert torch.allclose(probs.max(dim=1).values, torch.ones(40))


def test_memory_keeps_each_class_even_when_another_floods_it():
    learner = small(memory_weight=1.0, memory_k=1, memory_capacity=8)  # 2 slots per class
    x, y = data(n=100)
    old = x[y == 0][:2]
    learner.observe(old, torch.zeros(2, dtype=torch.long))
    flood = x[y == 1]
    learner.observe(flood, torch.ones(len(flood), dtype=torch.long))
    assert (learner.predict(old).argmax(dim=1) == 0).all()


def test_memory_keys_stay_valid_while_the_encoder_changes():
    learner = small(memory_weight=1.0, memory_k=1, hebbian_lr=0.5)
    x, y = data()
    learner.observe(x[:32], y[:32])
    encoder = learner.w_enc.clone()
    for start in range(32, 256, 32):
        learner.observe(x[start : start + 32], y[start : start + 32])
    assert not torch.equal(learner.w_enc, encoder)
    assert torch.equal(learner.predict(x[:32]).argmax(dim=1), y[:32])


def test_hebbian_learning_moves_immature_winners_toward_their_inputs():
    learner = small(hebbian_lr=0.5, max_new_per_step=0)
    x, y = data()
    xn = normalised(x[:32])
    best = (xn @ learner.w_enc.T).argmax(dim=1)
    unit = int(best[0])
    mine = xn[best == unit].mean(dim=0)
    before = float(learner.w_enc[unit] @ mine)
    learner.observe(x[:32], y[:32])
    assert float(learner.w_enc[unit] @ mine) > before
    assert torch.allclose(learner.w_enc.norm(dim=1), torch.ones(64))


def test_maturation_locks_units():
    learner = small(hebbian_lr=0.5, maturity_fraction=0.5, max_new_per_step=0)
    x, y = data()
    for start in range(0, 128, 32):
        learner.observe(x[start : start + 32], y[start : start + 32])
    stats = learner.sleep(Replay(x[:64], y[:64]))
    mature = learner.mature.clone()
    assert 0 < stats.extra["new_mature"] == int(mature.sum()) < 64
    assert (learner.period_wins == 0).all() and int(learner.period_samples) == 0
    before = learner.w_enc.clone()
    for start in range(128, 256, 32):
        learner.observe(x[start : start + 32], y[start : start + 32])
    assert torch.equal(learner.w_enc[mature], before[mature])
    assert not torch.equal(learner.w_enc[~mature], before[~mature])


def test_sleep_solves_the_core_readout_in_closed_form():
    learner = small(ridge=0.5, max_new_per_step=0, importance_rate=0.0)
    x, y = data()
    for start in range(0, 128, 32):
        learner.observe(x[start : start + 32], y[start : start + 32])
    learner.sleep(Replay(x[:0], y[:0]))
    codes = learner.encode(x[:128]).double()
    onehot = torch.nn.functional.one_hot(y[:128], CLASSES).double()
    expected = torch.linalg.solve(codes.T @ codes + 0.5 * torch.eye(64, dtype=torch.float64),
                                  codes.T @ onehot)
    assert torch.allclose(learner.w_core, expected.T.float(), atol=1e-4)


def test_the_consolidated_readout_does_not_depend_on_the_order_of_the_data():
    x, y = data()
    by_class = torch.argsort(y, stable=True)
    results = []
    for order in (torch.arange(len(y)), by_class):
        learner = small(max_new_per_step=0)
        for start in range(0, len(y), 32):
            chunk = order[start : start + 32]
            learner.observe(x[chunk], y[chunk])
        learner.sleep(Replay(x[:0], y[:0]))
        results.append(learner.w_core)
    assert torch.allclose(results[0], results[1], atol=1e-4)


def test_sleep_raises_importance_where_recall_is_correct():
    learner = small(importance_rate=0.5)
    x, y = data()
    keep = y < 3  # class 3 is never replayed
    for start in range(0, 128, 32):
        learner.observe(x[start : start + 32], y[start : start + 32])
    stats = learner.sleep(Replay(x[:128][keep[:128]], y[:128][keep[:128]]))
    assert stats.extra["replay_accuracy"] > 0.9
    assert learner.importance[:3].max() > 0.3
    assert (learner.importance[3] == 0).all()
    for _ in range(5):
        learner.sleep(Replay(x[:128], y[:128]))
    assert learner.importance.max() == 1.0 and learner.importance.min() >= 0.0


def test_unseen_classes_get_no_probability():
    learner = small()
    x, y = data()
    seen = y < 2
    learner.observe(x[seen][:32], y[seen][:32])
    probs = learner.predict(x[:16])
    assert (probs[:, 2:] < 1e-6).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(16))


def test_a_fresh_learner_predicts_uniformly():
    probs = small().predict(torch.randn(3, DIM))
    assert torch.allclose(probs, torch.full((3, CLASSES), 1 / CLASSES))


def test_without_sleep_memory_and_context_still_carry_new_and_old_classes():
    learner = Plastic(input_dim=20, num_classes=10, seed=0)
    metrics = class_incremental(learner, sleep=False)
    assert metrics["accuracy_per_task"][-1] > 0.9
    assert metrics["average_accuracy"] > 0.8
