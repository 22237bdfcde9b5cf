"""Workload generation: the seeded random streams a world draws its invocations and runs from.

Random arrivals are drawn from one RNG stream in creation order (``arrivals/SEED`` for the times,
``world/SEED`` for their content), the backlog from ``backlog/SEED``, ids from ``ids/SEED``, and
the runs of a periodic target from one RNG per target, drawn lazily as time goes on
(:meth:`Workload.ensure_runs`). So the same seed and spec give the same records whatever times the
world is asked about.

Not thread-safe: the world calls it under its lock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

from exporter.ecs.models import OSS_OUTPUT_ERROR_CODES
from exporter.simulator.model import OUTCOMES, Invocation, Outcome, RunPlan, Target, outcome_named
from exporter.simulator.spec import WorldSpec

_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("uptime", " 10:15:01 up 12 days,  3:04,  0 users,  load average: 0.08, 0.03, 0.01\n", ""),
    (
        "df -h /",
        "Filesystem      Size  Used Avail Use% Mounted on\n"
        "/dev/vda1        40G  12G   26G  32% /\n",
        "",
    ),
    ("systemctl is-active nginx", "active\n", "inactive\n"),
    ("yum -y update", "Complete!\n", "Error: Failed to download metadata for repo 'base'\n"),
    (
        "python3 backup.py",
        "backup done: 1532 files, 2.1 GiB\n",
        "Traceback: OSError: [Errno 28] No space left on device\n",
    ),
    ("cat /etc/os-release", 'NAME="Alibaba Cloud Linux"\nVERSION="3"\n', ""),
    ("docker ps -q | wc -l", "7\n", "Cannot connect to the Docker daemon\n"),
    (
        "Get-Service W32Time",
        "Running  W32Time  Windows Time\n",
        "Get-Service : Cannot find any service\n",
    ),
    ("rotate-logs.sh", "rotated 12 files\n", "rotate-logs.sh: permission denied\n"),
    ("curl -fsS localhost:8080/health", '{"status":"ok"}\n', "curl: (7) Failed to connect\n"),
)
_USERNAMES = ("root", "root", "root", "ecs-user", "admin", "")
_TAG_SETS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("env", "prod"),),
    (("env", "staging"),),
    (("env", "prod"), ("team", "ops")),
    (("team", "data"), ("owner", "zhangsan")),
    (("app", "web"), ("env", "prod")),
    (("app", "batch"), ("env", "test"), ("owner", "")),
)
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


class Workload:
    """Draws invocations and runs for one world (see the module docstring)."""

    def __init__(self, seed: int, spec: WorldSpec, start_time: float) -> None:
        self.seed = seed
        self.spec = spec
        self._rng = random.Random(f"world/{seed}")
        self._ids = random.Random(f"ids/{seed}")
        self._arrivals = random.Random(f"arrivals/{seed}")
        self._seq = 0
        self.instances = [self.new_id("i-", 20) for _ in range(spec.instances)]
        self.command_ids = [self.new_id("c-", 20) for _ in _COMMANDS]
        self._resource_groups = [self.new_id("rg-", 15) for _ in range(3)]
        mix = spec.outcome_mix
        self._mix = (
            tuple(outcome_named(n) for n in mix),
            tuple(float(w) for w in mix.values()),
        )
        self._next_arrival = (
            start_time + self._arrivals.expovariate(spec.arrival_rate)
            if spec.arrival_rate > 0
            else math.inf
        )

    def new_id(self, prefix: str, length: int) -> str:
        """A new id like the API's (``t-`` + 20 characters), from the id stream."""
        return prefix + "".join(self._ids.choice(_ALNUM) for _ in range(length))

    def target_rng(self, invoke_id: str, index: int) -> random.Random:
        """The random stream of the periodic runs of target ``index`` of ``invoke_id``."""
        return random.Random(f"{self.seed}/{invoke_id}/{index}")

    def next_seq(self) -> int:
        """The creation sequence number of the next invocation (orders equal creation times)."""
        self._seq += 1
        return self._seq

    def per_target_outcomes(
        self,
        outcome: str | Outcome | Sequence[str | Outcome],
        n: int,
        *,
        periodic: bool,
    ) -> list[tuple[Outcome, ...]]:
        if isinstance(outcome, (str, Outcome)):
            return [(outcome_named(outcome),)] * n
        resolved = tuple(outcome_named(o) for o in outcome)
        if periodic:
            if not resolved:
                raise ValueError("outcome must not be empty")
            return [resolved] * n
        if len(resolved) != n:
            raise ValueError("outcome needs one value per instance")
        return [(o,) for o in resolved]

    def scripted_run(
        self,
        outcome: Outcome,
        created: float,
        pending: float,
        duration: float,
        exit_code: int | None,
        stop_after: float | None,
        oss_final: str,
        oss_delay: float,
        dropped: int,
        output: str | None,
        command_index: int,
        repeats: int = 1,
    ) -> RunPlan:
        start = created + pending
        end = start + duration if outcome.runs else start
        stop_at = None
        if outcome.status == "Stopped":
            stop_at = start + (stop_after if stop_after is not None else duration / 2)
            stop_at = min(stop_at, end)
        oss_status, oss_code = self._oss_final(oss_final, outcome)
        return RunPlan(
            repeats=repeats,
            queued=created,
            start=start,
            end=end,
            outcome=outcome,
            exit_code=exit_code if exit_code is not None else self._default_exit(outcome, 1),
            stop_at=stop_at,
            dropped=dropped,
            oss_status=oss_status,
            oss_error_code=oss_code,
            oss_ready=end + (oss_delay if oss_status else 0.0),
            output=output if output is not None else self._output_for(outcome, command_index),
        )

    @staticmethod
    def _oss_final(oss_final: str, outcome: Outcome) -> tuple[str, str]:
        if not oss_final:
            return "", ""
        if not outcome.runs:
            return "Failed", "CloudAssistant.UnsupportedInvocationStatus"
        if oss_final == "Finished":
            return "Finished", ""
        status, _, code = oss_final.partition(".")
        if status != "Failed" or code not in OSS_OUTPUT_ERROR_CODES:
            raise ValueError(f"oss must be 'Finished' or 'Failed.<code>', not {oss_final!r}")
        return "Failed", code

    @staticmethod
    def _default_exit(outcome: Outcome, nonzero: int) -> int:
        if outcome.status == "Failed":
            return nonzero
        if outcome.status in ("Timeout", "Terminated", "Stopped", "Error"):
            return -1
        return 0

    @staticmethod
    def _output_for(outcome: Outcome, command_index: int) -> str:
        _, ok, bad = _COMMANDS[command_index % len(_COMMANDS)]
        if not outcome.runs:
            return ""
        if outcome.status == "Success":
            return ok
        return bad or ok

    def _draw_range(self, rng: random.Random, bounds: tuple[float, float], log: bool) -> float:
        low, high = bounds
        if high <= low:
            return low
        if log and low > 0:
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        return rng.uniform(low, high)

    def _draw_oss(self, rng: random.Random) -> str:
        spec = self.spec
        if rng.random() >= spec.oss_failure_share:
            return "Finished"
        codes = list(spec.oss_failure_mix)
        weights = list(spec.oss_failure_mix.values())
        return "Failed." + rng.choices(codes, weights)[0]

    def _draw_run(
        self,
        rng: random.Random,
        outcome: Outcome,
        queued: float,
        command_index: int,
        oss_final: str,
        repeats: int,
        pending: float,
        max_duration: float | None = None,
    ) -> RunPlan:
        spec = self.spec
        duration = self._draw_range(rng, spec.duration_seconds, log=True)
        if outcome.status == "Timeout":
            duration = spec.timeout_seconds
        if max_duration is not None:
            duration = min(duration, max_duration)
        if not outcome.runs:
            pending = 60.0 if outcome.error_code == "DeliveryTimeout" else pending
        dropped = 0
        if outcome.runs and rng.random() < spec.dropped_share:
            dropped = rng.randint(1, 400_000)
        exit_code = self._default_exit(outcome, rng.choice((1, 1, 2, 127, 255)))
        return self.scripted_run(
            outcome,
            queued,
            pending,
            duration,
            exit_code,
            None,
            oss_final,
            self._draw_range(rng, spec.oss_delay_seconds, log=False),
            dropped,
            None,
            command_index,
            repeats=repeats,
        )

    def _random_invocation(
        self,
        created: float,
        rng: random.Random,
        *,
        force_outcome: Outcome | None = None,
        force_oss: str | None = None,
        force_mode: str | None = None,
        n_targets: int | None = None,
    ) -> Invocation:
        spec = self.spec
        low, high = spec.instances_per_invocation
        n = n_targets if n_targets is not None else rng.randint(low, min(high, spec.instances))
        n = min(n, len(self.instances))
        instance_ids = rng.sample(self.instances, n)
        roll = rng.random()
        mode = force_mode or (
            "Period"
            if roll < spec.periodic_share
            else "EveryReboot"
            if roll < spec.periodic_share + spec.every_reboot_share
            else "Once"
        )
        command_index = rng.randrange(len(_COMMANDS))
        with_oss = force_oss is not None or rng.random() < spec.oss_share
        tags = rng.choice(_TAG_SETS) if rng.random() < spec.tag_share else ()
        group = (
            rng.choice(self._resource_groups) if rng.random() < spec.resource_group_share else ""
        )
        in_containers = rng.random() < spec.container_share
        username = rng.choice(_USERNAMES)
        inv = Invocation(
            seq=self.next_seq(),
            invoke_id=self.new_id("t-", 20),
            command_id=self.command_ids[command_index],
            command_index=command_index,
            created=created,
            repeat_mode=mode,
            period=self._draw_range(rng, spec.period_seconds, log=False),
            max_runs=1 if mode == "Once" else None,
            tags=tags,
            resource_group_id=group,
            oss_delivery="oss://sim-bucket/cloud-assistant" if with_oss else "",
            termination_mode=rng.choice(("Process", "ProcessTree")),
            launcher='python3 -u {{ACS::ScriptFileName|Ext(".py")}}'
            if _COMMANDS[command_index][0].startswith("python3")
            else "",
            targets=[],
            duration=spec.duration_seconds,
            outcome_mix=self._mix,
        )
        for index, instance_id in enumerate(instance_ids):
            container_id = container_name = ""
            if in_containers:
                container_id = "".join(rng.choice("0123456789abcdef") for _ in range(64))
                container_name = f"app-{rng.randrange(1000):03d}"
            target = Target(instance_id, container_id, container_name, username, [])
            if with_oss:
                oss_final = force_oss if force_oss is not None else self._draw_oss(rng)
            else:
                oss_final = ""
            if mode == "Once":
                outcome = force_outcome or rng.choices(self._mix[0], self._mix[1])[0]
                pending = self._draw_range(rng, spec.pending_seconds, log=False)
                target.runs.append(
                    self._draw_run(rng, outcome, created, command_index, oss_final, 1, pending)
                )
            else:
                target.rng = self.target_rng(inv.invoke_id, index)
                target.oss_final = oss_final
            inv.targets.append(target)
        return inv

    def backlog(self, start: float) -> list[Invocation]:
        """The finished records of the spec's backlog before ``start``, oldest first (drawn
        once, right after the workload is made)."""
        spec = self.spec
        if spec.backlog <= 0:
            return []
        rng = random.Random(f"backlog/{self.seed}")
        invocations: list[Invocation] = []
        records = 0
        if spec.every_code:
            specials: list[tuple[Outcome | None, str | None, str | None]] = [
                (outcome, None, None) for outcome in OUTCOMES.values()
            ]
            specials += [(OUTCOMES["Success"], "Finished", None)]
            specials += [(OUTCOMES["Success"], f"Failed.{c}", None) for c in OSS_OUTPUT_ERROR_CODES]
            specials += [(None, None, "Period"), (None, None, "EveryReboot")]
            for outcome, oss, mode in specials:
                # Recent enough to be kept, old enough to be finished.
                created = start - rng.uniform(600.0, min(spec.backlog_span, 3600.0))
                if mode is not None:
                    created = start - rng.uniform(300.0, 900.0)
                inv = self._random_invocation(
                    created, rng, force_outcome=outcome, force_oss=oss, force_mode=mode, n_targets=1
                )
                invocations.append(inv)
                records += len(inv.targets)
        while records < spec.backlog:
            created = start - spec.backlog_span * rng.random() - spec.timeout_seconds - 60.0
            inv = self._random_invocation(created, rng, force_mode="Once")
            extra = records + len(inv.targets) - spec.backlog
            if extra > 0:
                del inv.targets[len(inv.targets) - extra :]
            invocations.append(inv)
            records += len(inv.targets)
        invocations.sort(key=lambda i: (i.created, i.seq))
        return invocations

    def arrivals_until(self, when: float) -> Iterator[Invocation]:
        """The random invocations created after the last one drawn, up to ``when``, in order."""
        while self._next_arrival <= when:
            created = self._next_arrival
            yield self._random_invocation(created, self._rng)
            self._next_arrival = created + self._arrivals.expovariate(self.spec.arrival_rate)

    def ensure_runs(self, inv: Invocation, ti: int, now: float) -> None:
        """Draw the runs of periodic target ``ti`` of ``inv`` up to the first one due after
        ``now``."""
        target = inv.targets[ti]
        runs = target.runs
        rng = target.rng
        assert rng is not None
        oss_final = target.oss_final
        if inv.stopped_at is not None:
            # stop_invocation drew every run due before the stop: drawing again after it would
            # consume the random stream differently (EveryReboot) and could add a run the stop
            # had already ruled out.
            return
        while not runs or runs[-1].queued <= now:
            if inv.max_runs is not None and len(runs) >= inv.max_runs:
                return
            k = len(runs)
            if not runs:
                due = inv.created + (inv.period if inv.repeat_mode == "Period" else 0.0)
            elif inv.repeat_mode == "Period":
                due = runs[0].queued + k * inv.period
            else:
                due = runs[-1].queued + inv.period * rng.uniform(0.5, 2.0)
            if inv.stopped_at is not None and due > inv.stopped_at:
                return
            max_duration = inv.period * 0.8
            if target.scripted:
                outcome = target.scripted[k % len(target.scripted)]
                duration, exit_code, dropped, oss_delay = target.script
                runs.append(
                    self.scripted_run(
                        outcome,
                        due,
                        0.0,
                        duration,
                        exit_code,
                        None,
                        oss_final,
                        oss_delay,
                        dropped,
                        None,
                        inv.command_index,
                        repeats=k + 1,
                    )
                )
            else:
                outcome = rng.choices(inv.outcome_mix[0], inv.outcome_mix[1])[0]
                runs.append(
                    self._draw_run(
                        rng,
                        outcome,
                        due,
                        inv.command_index,
                        oss_final,
                        k + 1,
                        0.0,
                        max_duration,
                    )
                )

    def cancelled_run(self, target: Target, when: float) -> RunPlan:
        """The run StopInvocation leaves on a periodic target that had not run yet."""
        run = self.scripted_run(
            OUTCOMES["Cancelled"], when, 0.0, 0.0, 0, None, target.oss_final, 0.0, 0, "", 0
        )
        run.repeats = 0
        return run
