"""Strategy "mygo": wake/sleep generative replay (after Cotix-AI/MyGO), with its bugs fixed.

The model
---------
- A shared feature *extractor*, an MLP ``input -> hidden (ReLU) -> features`` whose output is
  linear, like the original's ``Linear(1568 -> 256)``: with a ReLU there, training on the first
  task's two classes silenced units that later tasks needed, and since wake keeps the extractor
  frozen, a second task could learn next to nothing (docs/bench/mygo.md).
- One *task head* per task (``Linear(features, num_classes)``), trained on its task's classes only:
  MyGO's multi-head, task-incremental knowledge.
- One *unified head* (``Linear(features, num_classes)``) over every class: the class-incremental
  answer. ``logits(x)`` is the unified head on the extractor's features, with classes never seen
  pushed down to ``-1e4`` so that they cannot win. Task-incremental prediction is the caller's
  ``predict(x, mask)`` over the same scores.
- One class-conditional *generator* per task (the condition is the global class, one-hot):
  a conditional VAE (``generator="vae"``, the default) or a conditional GAN, generator plus
  discriminator as in the original (``generator="gan"``).

Wake (``observe``)
------------------
The batch's task (``task``; ``None`` is one default task, named ``""``) gets its head and its
generator the first time it is seen. Then, ``epochs_per_batch`` times, ``head_steps`` Adam steps
(``lr``) on the cross-entropy of the task head (over the task's classes) on the batch, plus the
cross-entropy of the unified head on the batch *and* on ``wake_dream_ratio * B`` dreams of the
classes of the other tasks (drawn from their generators): the unified head keeps seeing the old
classes, so the newest task does not simply take over the class-incremental answer. The extractor
is frozen during wake (its features are computed once, without gradients, so the extra head steps
are cheap: linear heads on fixed features), except in the "infant" phase: while only one task has
been seen and no sleep has consolidated yet, the extractor trains with the first task's heads.
Finally the task's generator trains on the real batch (``generator_lr``): ``generator_warmup``
steps on the task's first batch, half as many on each next batch of the task, never fewer than
``generator_steps`` (``generator_steps_for``). The step count follows the task's length where a
fixed count per batch does not: a generator needs some tens of steps before its dreams look like
their class, and a task of a few batches at two steps each leaves them looking like no class in
particular; a sleep trained on such dreams then unlearns the newest task. A long task gets the
warm-up plus its steady two steps a batch, a bounded extra cost. Figures and the commands that
measure them: ``docs/bench/mygo.md``.

Sleep (``sleep(replay, budget)``)
---------------------------------
The teacher is a frozen deep copy of the wake model (extractor, every task head, unified head)
taken at the start of sleep; the student is the live model, extractor included, trained by a fresh
Adam (``sleep_lr``) on batches of ``sleep_batch`` samples until ``budget`` samples were processed:
half real replay (``replay.x, replay.y``, when given), the rest dreams of every seen class, each
from the generator of the task that learned it (labels = the generator's condition). The loss is

- the cross-entropy of the student's unified head on the labels (all classes compete, balanced);
- ``distill_weight *`` the MSE between the student's and the teacher's task-head logits (every
  head, over its task's classes), as in the original: the heads' functions are carried over while
  the extractor under them moves;
- ``distill_weight *`` ``T^2 KL(teacher task head || student unified head)`` over the sample's
  task classes (T = 2): the within-task knowledge the wake phase put into the task heads is
  distilled into the unified head. This term is nonzero from the first step, because the teacher's
  task heads and the student's unified head are different functions.

How the original's bugs are avoided
-----------------------------------
1. The extractor is not random forever: it trains during the first task and, above all, at every
   sleep (its parameters are in the sleep optimiser); ``tests/models/test_mygo.py`` checks that
   sleep changes the extractor's weights and that wake after the first sleep does not.
2. Sleep is never a no-op: the teacher is a snapshot, the student is trained on labelled dreams
   and replay, and the teacher-to-student KL is between two different heads, so the loss and the
   weight change are nonzero (``Stats.extra`` reports the distillation terms).
3. Class-incremental prediction needs no task oracle: the unified head ranks all classes.

Why the generators work in the input space
------------------------------------------
Dreams must pass through the *student's* extractor at sleep, which is exactly the part that
changes; features dreamed by a generator trained on an older extractor would be stale after the
first sleep. Input-space dreams stay valid however the extractor moves, and they are what the
teacher was trained on. The VAE is the default because it learns usable class-conditional samples
from a single pass over a stream (a few steps per batch), where a GAN is still unstable; its
output is linear (inputs need not lie in [0, 1]) with a squared-error reconstruction.

Limits: the features a new task is learned on at wake are those of the last sleep (heads are
linear), so a service that sleeps rarely learns later tasks on older features; there is one
generator per task (memory grows linearly with tasks); a class taught in several tasks is dreamed
by the latest of them only; a sleep before any wake batch does nothing, replay included.

Randomness is reproducible from the state: every wake batch and every sleep draws from a
``torch.Generator`` seeded by ``(seed, counter)``; heads and generators are initialised from
``(seed, task index)``. The state dict holds the networks with their Adam moments, the task names
(UTF-8 bytes of a JSON list) and the bookkeeping tensors. The sleep optimiser is fresh per sleep.

What it achieves, under which protocol: ``docs/bench/mygo.md``."""

from __future__ import annotations

import copy
import json
import math
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from models.learner import Learner, Replay, Stats
from models.network import Epochs, Hidden, LearningRate
from models.optim import adam
from models.registry import register
from models.sample_memory import mix_seed
from models.sizing import parameter_bytes
from models.torch_state import load_network_state, move_optimizer, network_state

UNSEEN = -1e4  # the score of a class never seen: it never wins
TEMPERATURE = 2.0  # of the teacher-head -> unified-head distillation at sleep
DEFAULT_TASK = ""


class ConditionalVAE(nn.Module):
    """``q(z | x, c)`` and ``p(x | z, c)``, both one hidden ReLU layer; ``c`` one-hot."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int, z_dim: int) -> None:
        super().__init__()
        self.num_classes, self.z_dim = num_classes, z_dim
        self.encoder = nn.Sequential(nn.Linear(input_dim + num_classes, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, z_dim)
        self.logvar = nn.Linear(hidden, z_dim)
        self.decoder = nn.Sequential(
            nn.Linear(z_dim + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, input_dim)
        )

    def _condition(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.num_classes).float()

    def sample(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(len(y), self.z_dim, generator=gen).to(y.device)
        return self.decoder(torch.cat([z, self._condition(y)], dim=1))

    def loss(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c = self._condition(y)
        h = self.encoder(torch.cat([x, c], dim=1))
        mu, logvar = self.mu(h), self.logvar(h).clamp(-10.0, 10.0)
        eps = torch.randn(mu.shape, generator=gen).to(mu.device)
        x_hat = self.decoder(torch.cat([mu + eps * torch.exp(0.5 * logvar), c], dim=1))
        recon = ((x_hat - x) ** 2).sum(dim=1).mean()
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)).mean()
        return recon + kl


class ConditionalGenerator(nn.Module):
    """The cGAN generator: ``(z, one-hot c) -> hidden (ReLU) -> x`` (linear output)."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int, z_dim: int) -> None:
        super().__init__()
        self.num_classes, self.z_dim = num_classes, z_dim
        self.net = nn.Sequential(
            nn.Linear(z_dim + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, input_dim)
        )

    def sample(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(len(y), self.z_dim, generator=gen).to(y.device)
        return self.net(torch.cat([z, F.one_hot(y, self.num_classes).float()], dim=1))


class ConditionalDiscriminator(nn.Module):
    """The cGAN discriminator: ``(x, one-hot c) -> hidden (LeakyReLU) -> real/fake logit``."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.Linear(input_dim + num_classes, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, F.one_hot(y, self.num_classes).float()], dim=1)).squeeze(1)


@register
class MyGO(Learner):
    name = "mygo"
    settings = ("class", "task")

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        seed: int = 0,
        hidden: Hidden = 400,
        features: Hidden = 256,
        lr: LearningRate = 1e-3,
        epochs_per_batch: Epochs = 1,
        generator: Literal["vae", "gan"] = "vae",
        generator_hidden: Hidden = 256,
        z_dim: Annotated[int, Field(ge=1, le=1024)] = 32,
        generator_lr: LearningRate = 1e-3,
        head_steps: Annotated[int, Field(ge=1, le=100)] = 5,
        generator_steps: Annotated[int, Field(ge=1, le=100)] = 2,
        generator_warmup: Annotated[int, Field(ge=1, le=1000)] = 32,
        wake_dream_ratio: Annotated[float, Field(ge=0.0, le=16.0)] = 1.0,
        sleep_lr: LearningRate = 1e-3,
        sleep_batch: Annotated[int, Field(ge=1, le=4096)] = 64,
        distill_weight: Annotated[float, Field(ge=0.0, le=1e6)] = 1.0,
    ) -> None:
        super().__init__(input_dim=input_dim, num_classes=num_classes, seed=seed)
        self.hidden, self.features, self.lr = hidden, features, lr
        self.epochs_per_batch, self.head_steps = epochs_per_batch, head_steps
        self.generator_kind, self.generator_hidden, self.z_dim = generator, generator_hidden, z_dim
        self.generator_lr, self.generator_steps = generator_lr, generator_steps
        self.generator_warmup = generator_warmup
        self.wake_dream_ratio = wake_dream_ratio
        self.sleep_lr, self.sleep_batch, self.distill_weight = sleep_lr, sleep_batch, distill_weight
        self._reset()

    # -- structure --------------------------------------------------------------------------------
    def _reset(self) -> None:
        """The untrained model of ``self.seed``: no task, no head, no generator."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            extractor = nn.Sequential(
                nn.Linear(self.input_dim, self.hidden), nn.ReLU(),
                nn.Linear(self.hidden, self.features),
            )
            unified = nn.Linear(self.features, self.num_classes)
        self.core = nn.ModuleDict(
            {"extractor": extractor, "unified": unified, "heads": nn.ModuleList()}
        ).to(self.device)
        self.generators = nn.ModuleList()
        self.discriminators = nn.ModuleList()
        self.wake_opt = adam(self.core.parameters(), lr=self.lr)
        self.gen_opt: torch.optim.Optimizer | None = None
        self.disc_opt: torch.optim.Optimizer | None = None
        self.tasks: list[str] = []
        self.task_classes = torch.zeros(0, self.num_classes, dtype=torch.bool)  # [T, C], CPU
        self.class_task = torch.full((self.num_classes,), -1, dtype=torch.int64)  # CPU
        self.seen = torch.zeros(self.num_classes, dtype=torch.bool)  # CPU
        self.task_batches = torch.zeros(0, dtype=torch.int64)  # [T] wake batches of each task, CPU
        self.batches = 0  # wake batches observed (seeds their randomness)
        self.sleeps = 0  # sleeps that consolidated (seeds their randomness)

    def _add_task(self, name: str) -> int:
        """A head and a generator for task ``name``, initialised from (seed, task index)."""
        index = len(self.tasks)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, "task", index))
            head, gen, disc = self._task_networks()
        self.core["heads"].append(head.to(self.device))
        self.wake_opt.add_param_group({"params": list(head.parameters())})
        self.generators.append(gen.to(self.device))
        betas = (0.9, 0.999) if disc is None else (0.5, 0.999)
        if self.gen_opt is None:
            self.gen_opt = adam(gen.parameters(), lr=self.generator_lr, betas=betas)
        else:
            self.gen_opt.add_param_group({"params": list(gen.parameters())})
        if disc is not None:
            self.discriminators.append(disc.to(self.device))
            if self.disc_opt is None:
                self.disc_opt = adam(
                    disc.parameters(), lr=self.generator_lr, betas=betas
                )
            else:
                self.disc_opt.add_param_group({"params": list(disc.parameters())})
        self.tasks.append(name)
        self.task_classes = torch.cat(
            [self.task_classes, torch.zeros(1, self.num_classes, dtype=torch.bool)]
        )
        self.task_batches = torch.cat([self.task_batches, torch.zeros(1, dtype=torch.int64)])
        return index

    def _task_networks(self) -> tuple[nn.Linear, nn.Module, ConditionalDiscriminator | None]:
        """A new task's head, generator and (GAN) discriminator, drawn from torch's global RNG."""
        head = nn.Linear(self.features, self.num_classes)
        if self.generator_kind == "vae":
            return head, ConditionalVAE(self.input_dim, self.num_classes, self.generator_hidden, self.z_dim), None
        gen = ConditionalGenerator(self.input_dim, self.num_classes, self.generator_hidden, self.z_dim)
        return head, gen, ConditionalDiscriminator(self.input_dim, self.num_classes, self.generator_hidden)

    def grown_bytes(self, tasks: int) -> int:
        """Per task a head and a generator (and discriminator) with Adam's moments; Adam's moments
        of the extractor and unified head; at sleep, a teacher copy and a fresh Adam of the core
        with every head. Memory grows linearly with tasks: the brain's task limit bounds it."""
        with torch.device("meta"):
            head, *generator = self._task_networks()
        per_task = parameter_bytes(head) + sum(parameter_bytes(m) for m in generator if m is not None)
        core = parameter_bytes(self.core["extractor"]) + parameter_bytes(self.core["unified"])
        sleep = 3 * (core + tasks * parameter_bytes(head))
        return 2 * core + 3 * tasks * per_task + sleep

    # -- wake -------------------------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, task: str | None = None) -> Stats:
        x = self._inputs(x)
        y = self._labels(y, x.shape[0])
        if x.shape[0] == 0:
            return Stats()
        name = DEFAULT_TASK if task is None else task
        k = self.tasks.index(name) if name in self.tasks else self._add_task(name)
        labels = y.cpu()
        self.task_classes[k, labels] = True
        self.class_task[labels] = k
        self.seen[labels] = True
        gen = torch.Generator().manual_seed(mix_seed(self.seed, "wake", self.batches))
        self.batches += 1
        infant = self.sleeps == 0 and len(self.tasks) == 1
        for _ in range(self.epochs_per_batch):
            loss = self._wake_step(x, y, k, infant, gen)
        steps = self.generator_steps_for(int(self.task_batches[k]))
        self.task_batches[k] += 1
        generator_loss = self._train_generator(k, x, y, gen, steps)
        return Stats(
            samples=int(x.shape[0]),
            loss=loss,
            extra={
                "generator_loss": generator_loss,
                "generator_steps": steps,
                "tasks": len(self.tasks),
                "extractor": "training" if infant else "frozen",
            },
        )

    def _wake_step(
        self, x: torch.Tensor, y: torch.Tensor, k: int, infant: bool, gen: torch.Generator
    ) -> float:
        """``head_steps`` Adam steps of the heads on the batch (+ dreams of the other tasks'
        classes for the unified head); the extractor trains only in the infant phase."""
        others = self.seen & (self.class_task >= 0) & ~self.task_classes[k]
        xs, ys = x, y
        if self.wake_dream_ratio > 0 and bool(others.any()):
            old = others.nonzero().squeeze(1)
            n = math.ceil(self.wake_dream_ratio * len(y))
            dream_y = old[torch.randint(len(old), (n,), generator=gen)].to(self.device)
            xs, ys = torch.cat([x, self._dream(dream_y, gen)]), torch.cat([y, dream_y])
        in_task = self.task_classes[k].to(self.device)
        frozen = None
        if not infant:
            with torch.no_grad():
                frozen = self.core["extractor"](xs)
        for _ in range(self.head_steps):
            self.wake_opt.zero_grad(set_to_none=True)
            feats = self.core["extractor"](xs) if frozen is None else frozen
            head = self.core["heads"][k](feats[: len(y)])
            loss = F.cross_entropy(self.core["unified"](feats), ys) + F.cross_entropy(
                head.masked_fill(~in_task, UNSEEN), y
            )
            loss.backward()
            self.wake_opt.step()
        return float(loss.detach())

    def generator_steps_for(self, earlier: int) -> int:
        """Generator steps on a task's batch after ``earlier`` batches of the same task: the
        warm-up on its first batch, half as many on each next one, never fewer than
        ``generator_steps``. A generator needs some tens of steps before its dreams carry their
        class, however few batches its task brings; the warm-up gives them to a short task and adds
        a bounded number (about twice the warm-up) to a long one."""
        return max(self.generator_steps, self.generator_warmup >> min(earlier, 62))

    def _train_generator(
        self, k: int, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, steps: int
    ) -> float:
        generator = self.generators[k]
        loss = torch.zeros(())
        for _ in range(steps):
            if self.generator_kind == "vae":
                self.gen_opt.zero_grad(set_to_none=True)
                loss = generator.loss(x, y, gen)
                loss.backward()
                self.gen_opt.step()
                continue
            disc = self.discriminators[k]
            real = torch.ones(len(y), device=self.device)
            fake = torch.zeros(len(y), device=self.device)
            self.disc_opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                dreams = generator.sample(y, gen)
            d_loss = F.binary_cross_entropy_with_logits(
                disc(x, y), real
            ) + F.binary_cross_entropy_with_logits(disc(dreams, y), fake)
            d_loss.backward()
            self.disc_opt.step()
            self.gen_opt.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(disc(generator.sample(y, gen), y), real)
            loss.backward()
            self.gen_opt.step()
            self.disc_opt.zero_grad(set_to_none=True)  # drop the generator step's D gradients
        return float(loss.detach())

    @torch.no_grad()
    def _dream(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Samples of classes ``y``, each from the generator of the task that learned it."""
        out = torch.empty(len(y), self.input_dim, device=self.device)
        owners = self.class_task[y.cpu()]
        for t in owners.unique().tolist():
            where = (owners == t).nonzero().squeeze(1).to(self.device)
            out[where] = self.generators[t].sample(y[where], gen)
        return out

    # -- sleep ------------------------------------------------------------------------------------
    def sleep(self, replay: Replay, budget: int = 1000) -> Stats:
        rx = self._inputs(replay.x)
        ry = self._labels(replay.y, rx.shape[0])
        dreamable = (self.class_task >= 0).nonzero().squeeze(1)
        if budget <= 0 or len(dreamable) == 0:
            return Stats()
        self.seen[ry.cpu()] = True
        teacher = copy.deepcopy(self.core).requires_grad_(False)
        optimizer = adam(self.core.parameters(), lr=self.sleep_lr)
        gen = torch.Generator().manual_seed(mix_seed(self.seed, "sleep", self.sleeps))
        head_mask = self.task_classes.to(self.device)  # [T, C]
        done, dreams = 0, 0
        totals = {"loss": 0.0, "classification": 0.0, "head_distillation": 0.0, "kd": 0.0}
        steps = 0
        while done < budget:
            n = min(self.sleep_batch, budget - done)
            n_real = n // 2 if len(ry) else 0
            real = torch.randint(max(len(ry), 1), (n_real,), generator=gen).to(self.device)
            dream_y = dreamable[torch.randint(len(dreamable), (n - n_real,), generator=gen)]
            dream_y = dream_y.to(self.device)
            xs = torch.cat([rx[real], self._dream(dream_y, gen)])
            ys = torch.cat([ry[real], dream_y])
            terms = self._sleep_loss(teacher, xs, ys, head_mask)
            loss = terms["classification"] + self.distill_weight * (
                terms["head_distillation"] + terms["kd"]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            terms["loss"] = loss
            for key in totals:
                totals[key] += float(terms[key].detach())
            done, dreams, steps = done + n, dreams + n - n_real, steps + 1
        for param in self.core.parameters():
            param.grad = None
        self.sleeps += 1
        means = {key: value / steps for key, value in totals.items()}
        return Stats(
            samples=done,
            loss=means.pop("loss"),
            extra={**means, "dreams": dreams, "replayed": done - dreams, "tasks": len(self.tasks)},
        )

    def _sleep_loss(
        self, teacher: nn.ModuleDict, x: torch.Tensor, y: torch.Tensor, head_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            t_feats = teacher["extractor"](x)
            t_heads = torch.stack([head(t_feats) for head in teacher["heads"]])  # [T, B, C]
        feats = self.core["extractor"](x)
        s_heads = torch.stack([head(feats) for head in self.core["heads"]])
        unified = self.core["unified"](feats)
        weights = head_mask[:, None, :].float()
        head_distillation = (((s_heads - t_heads) ** 2) * weights).sum() / (
            weights.sum() * x.shape[0]
        )
        # Within each sample's task: the teacher's task head teaches the student's unified head.
        owner = self.class_task.to(self.device)[y]
        valid = owner >= 0
        kd = torch.zeros((), device=self.device)
        if bool(valid.any()):
            rows = valid.nonzero().squeeze(1)
            task = owner[rows]
            mask = head_mask[task]  # [n, C]
            target = torch.softmax(
                t_heads[task, rows].masked_fill(~mask, UNSEEN) / TEMPERATURE, dim=1
            )
            log_student = torch.log_softmax(
                unified[rows].masked_fill(~mask, UNSEEN) / TEMPERATURE, dim=1
            )
            kl = (target * (torch.log(target.clamp_min(1e-12)) - log_student)).sum(dim=1)
            kd = kl.mean() * TEMPERATURE**2
        return {
            "classification": F.cross_entropy(unified, y),
            "head_distillation": head_distillation,
            "kd": kd,
        }

    # -- inference --------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self._inputs(x)
        scores = self.core["unified"](self.core["extractor"](x))
        return scores.masked_fill(~self.seen.to(self.device), UNSEEN)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {
            **network_state(self.core, self.wake_opt, prefix="core"),
            **network_state(self.generators, self.gen_opt, prefix="gen"),
            **network_state(self.discriminators, self.disc_opt, prefix="disc"),
            "mygo.tasks": torch.tensor(list(json.dumps(self.tasks).encode()), dtype=torch.uint8),
            "mygo.task_classes": self.task_classes.clone(),
            "mygo.class_task": self.class_task.clone(),
            "mygo.seen": self.seen.clone(),
            "mygo.task_batches": self.task_batches.clone(),
            "mygo.batches": torch.tensor(self.batches),
            "mygo.sleeps": torch.tensor(self.sleeps),
            "mygo.seed": torch.tensor(self.seed),
        }
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = ("core.", "optim.core.", "gen.", "optim.gen.", "disc.", "optim.disc.", "mygo.")
        unexpected = [k for k in state if not k.startswith(own)]
        if unexpected:
            raise ValueError(f"unexpected state entries {unexpected[:3]}")
        task_classes = state["mygo.task_classes"]
        if task_classes.dim() != 2 or task_classes.shape[1] != self.num_classes:
            raise ValueError(f"mygo.task_classes has shape {list(task_classes.shape)}")
        self.seed = int(state["mygo.seed"])
        self._reset()
        for name in json.loads(bytes(state["mygo.tasks"].tolist()).decode()):
            self._add_task(name)
        load_network_state(self.core, self.wake_opt, state, self.device, prefix="core")
        load_network_state(self.generators, self.gen_opt, state, self.device, prefix="gen")
        load_network_state(self.discriminators, self.disc_opt, state, self.device, prefix="disc")
        self.task_classes = task_classes.bool().cpu().clone()
        self.class_task = state["mygo.class_task"].to(torch.int64).cpu().clone()
        self.seen = state["mygo.seen"].bool().cpu().clone()
        # States saved before the warm-up existed lack the count: their tasks warm up again.
        batches = state.get("mygo.task_batches", torch.zeros(len(self.tasks), dtype=torch.int64))
        self.task_batches = batches.to(torch.int64).cpu().clone()
        self.batches = int(state["mygo.batches"])
        self.sleeps = int(state["mygo.sleeps"])

    def to(self, device: torch.device | str) -> MyGO:
        super().to(device)
        for module in (self.core, self.generators, self.discriminators):
            module.to(self.device)
        for optimizer in (self.wake_opt, self.gen_opt, self.disc_opt):
            if optimizer is not None:
                move_optimizer(optimizer, self.device)
        return self
